"""Ablation results: schema, aggregation, Markdown rendering, plots, and the committed results check."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ablations.framework.provenance import (
    SPEED_RELEVANT_CPU_FLAGS,
    describe_cpu,
    git_commit,
    git_dirty,
    hardware,
    library_versions,
    machine,
    provenance,
    utc_now,
)
from ablations.framework.publish import wandb_table, write_results
from ablations.framework.render import format_delta, format_value, markdown_diff, render_markdown
from ablations.framework.results import aggregate_runs, compute_delta, finalize_results, load_results, validate_results

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"


def _sample(data_kind: str = "synthetic", quick: bool = True) -> dict:
    return {
        "schema": 1,
        "paper": "cswin_unet",
        "table": 5,
        "subject": "upsampling",
        "title": "Upsampling strategy",
        "dataset": "synapse",
        "data_kind": data_kind,
        "quick": quick,
        "recipe": "reproduce/configs/cswin_unet/synapse.yaml",
        "overrides": {"trainer.max_epochs": 2, "data.init_args.batch_size": 4},
        "commit": "abc1234",
        "created": "2026-11-22T10:00:00Z",
        "seeds": [1234, 1235],
        "paper_source": "CSWin-UNet Table 5; values unknown (not published).",
        "metrics": [
            {"name": "mean_dice", "label": "DSC (%)", "higher_is_better": True},
            {"name": "mean_hd95", "label": "HD95", "higher_is_better": False},
        ],
        "variants": [
            {
                "name": "carafe",
                "description": "CARAFE (released)",
                "overrides": {"model.init_args.net.init_args.upsampler": "carafe"},
                "runs": [
                    {"seed": 1234, "metrics": {"mean_dice": 71.0, "mean_hd95": 12.0, "dice_aorta": 80.0},
                     "run_dir": "runs/carafe-s1234", "wandb_run": None},
                    {"seed": 1235, "metrics": {"mean_dice": 73.0, "mean_hd95": 14.5},
                     "run_dir": "runs/carafe-s1235", "wandb_run": "abcd"},
                ],
                "paper": {"mean_dice": 81.12, "mean_hd95": None},
            },
            {
                "name": "bilinear",
                "description": "bilinear x2 + 1x1 projection",
                "overrides": {"model.init_args.net.init_args.upsampler": "bilinear"},
                "runs": [{"seed": 1234, "metrics": {"mean_dice": 69.5, "mean_hd95": 20.25},
                          "run_dir": "runs/bilinear-s1234", "wandb_run": None}],
                "paper": {"mean_dice": None, "mean_hd95": None},
            },
            {
                "name": "transposed",
                "description": "ConvTranspose2d k = s = 2",
                "overrides": {"model.init_args.net.init_args.upsampler": "transposed"},
                "runs": [],
                "paper": {"mean_dice": None, "mean_hd95": None},
            },
        ],
        "notes": ["Quick mode: tiny model, two epochs."],
    }


# --------------------------------------------------------------------------- #
# aggregation
# --------------------------------------------------------------------------- #
def test_aggregate_runs_sample_std_and_single_seed():
    runs = [{"metrics": {"a": 1.0, "b": 5.0}}, {"metrics": {"a": 2.0}}, {"metrics": {"a": 6.0, "b": None}}]
    mean, std = aggregate_runs(runs, ["a", "b", "c"])
    assert mean["a"] == pytest.approx(3.0)
    assert std["a"] == pytest.approx(((2**2 + 1**2 + 3**2) / 2) ** 0.5)  # ddof = 1
    assert mean["b"] == 5.0 and std["b"] == 0.0  # one value -> std 0.0
    assert mean["c"] is None and std["c"] is None
    with pytest.raises(ValueError):
        aggregate_runs([{"metrics": {"a": float("nan")}}], ["a"])


def test_compute_delta():
    assert compute_delta({"a": 80.0, "b": 3.0, "c": None}, {"a": 81.12, "b": None, "c": 1.0}) == {
        "a": pytest.approx(-1.12),
        "b": None,
        "c": None,
    }


def test_finalize_fills_aggregates_and_rejects_bad_input():
    final = finalize_results(_sample())
    carafe = final["variants"][0]
    assert carafe["mean"] == {"mean_dice": 72.0, "mean_hd95": 13.25}
    assert carafe["std"]["mean_dice"] == pytest.approx(2**0.5)
    assert carafe["delta"] == {"mean_dice": pytest.approx(72.0 - 81.12), "mean_hd95": None}
    assert final["variants"][2]["mean"] == {"mean_dice": None, "mean_hd95": None}
    bad = _sample()
    bad["data_kind"] = "fake"
    with pytest.raises(ValueError, match="data_kind"):
        finalize_results(bad)
    bad = _sample()
    bad["variants"][0]["paper"]["mean_dsc"] = 1.0  # typo in a metric name
    with pytest.raises(ValueError, match="mean_dsc"):
        finalize_results(bad)
    bad = _sample()
    del bad["paper_source"]
    with pytest.raises(ValueError, match="paper_source"):
        validate_results(bad)
    bad = _sample()
    bad["variants"][1]["name"] = "carafe"
    with pytest.raises(ValueError, match="unique"):
        finalize_results(bad)


def test_non_finite_values_become_null_with_a_note():
    res = _sample()
    res["variants"][1]["runs"][0]["metrics"]["mean_hd95"] = float("inf")
    final = finalize_results(res)
    assert final["variants"][1]["runs"][0]["metrics"]["mean_hd95"] is None
    assert final["variants"][1]["mean"]["mean_hd95"] is None
    assert any("variants[1].runs[0].metrics.mean_hd95" in n for n in final["notes"])


# --------------------------------------------------------------------------- #
# rendering
# --------------------------------------------------------------------------- #
def test_render_markdown_rows_and_data_line():
    md = render_markdown(finalize_results(_sample()))
    lines = md.splitlines()
    assert lines[0] == "# cswin_unet — Table 5: Upsampling strategy"
    data_lines = [line for line in lines if line.startswith("**Data:")]
    assert len(data_lines) == 1 and "SYNTHETIC" in data_lines[0] and "quick mode" in data_lines[0]
    assert "REAL" not in md
    assert "| `carafe` | 72.00 ± 1.41 | 81.12 | -9.12 | 13.25 ± 1.77 | — | — | 2 |" in lines
    assert "| `bilinear` | 69.50 ± 0.00 | — | — | 20.25 ± 0.00 | — | — | 1 |" in lines
    assert "| `transposed` | — | — | — | — | — | — | 0 |" in lines
    assert "reproduce/configs/cswin_unet/synapse.yaml" in md
    assert "`abc1234`" in md and "1234, 1235" in md
    assert "CSWin-UNet Table 5; values unknown (not published)." in md
    assert "- Quick mode: tiny model, two epochs." in lines
    assert "`data.init_args.batch_size=4`, `trainer.max_epochs=2`" in md
    # deterministic
    assert render_markdown(finalize_results(_sample())) == md


def test_render_real_data_line():
    md = render_markdown(finalize_results(_sample("real", quick=False)))
    data_lines = [line for line in md.splitlines() if line.startswith("**Data:")]
    assert len(data_lines) == 1 and "REAL" in data_lines[0] and "full recipe" in data_lines[0]
    assert "SYNTHETIC" not in md


def test_number_formatting():
    assert format_value(None) == "—"
    assert format_value(1.005, 1) == "1.0"
    assert format_value(-0.001) == "0.00"
    assert format_delta(0.5) == "+0.50"
    assert format_delta(-0.5) == "-0.50"
    assert format_delta(-0.001) == "+0.00"
    assert format_delta(None) == "—"


def test_write_results_round_trip(tmp_path):
    json_path = tmp_path / "cswin_unet" / "table5_upsampling.json"
    md_path = write_results(_sample(), json_path)
    png_path = json_path.with_suffix(".png")
    assert md_path == json_path.with_suffix(".md")
    assert json_path.exists() and md_path.exists() and png_path.exists()
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_results(json_path)
    assert loaded == finalize_results(_sample())
    assert render_markdown(loaded) == md_path.read_text(encoding="utf-8")
    assert markdown_diff(json_path) == ""
    # stable formatting: writing the loaded results again gives identical bytes
    first = json_path.read_text(encoding="utf-8")
    write_results(loaded, json_path, plot=False)
    assert json_path.read_text(encoding="utf-8") == first
    assert json.loads(first)["schema"] == 1


def test_markdown_check_detects_edits(tmp_path):
    json_path = tmp_path / "table5_upsampling.json"
    md_path = write_results(_sample(), json_path, plot=False)
    md_path.write_text(md_path.read_text(encoding="utf-8").replace("72.00", "75.00"), encoding="utf-8")
    diff = markdown_diff(json_path)
    assert "75.00" in diff and "72.00" in diff
    # editing the JSON without re-rendering is caught too
    write_results(_sample(), json_path, plot=False)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    data["variants"][0]["mean"]["mean_dice"] = 99.0
    json_path.write_text(json.dumps(data), encoding="utf-8")
    assert markdown_diff(json_path) != ""


def test_plot_has_one_panel_per_metric():
    from ablations.framework.plots import plot_table

    fig = plot_table(finalize_results(_sample()))
    axes = fig.get_axes()
    assert len(axes) == 2
    assert "SYNTHETIC" in fig._suptitle.get_text()
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["carafe", "bilinear", "transposed"]


def test_wandb_table():
    pytest.importorskip("wandb")
    table = wandb_table(_sample())
    assert table.columns == [
        "variant", "mean_dice_mean", "mean_dice_std", "mean_dice_paper",
        "mean_hd95_mean", "mean_hd95_std", "mean_hd95_paper",
    ]
    assert len(table.data) == 3
    assert table.data[0][0] == "carafe" and table.data[0][1] == pytest.approx(72.0)
    assert table.data[0][3] == pytest.approx(81.12)


def test_environment_is_recorded_and_rendered():
    versions = library_versions()
    assert versions["python"].count(".") == 2 and versions["torch"].startswith("2.14.1")
    assert {"numpy", "scipy", "albumentations", "lightning"} <= versions.keys()
    results = _sample()
    results["environment"] = {"python": "3.11.7", "torch": "2.14.1", "albumentations": "2.0.8"}
    lines = render_markdown(finalize_results(results)).splitlines()
    assert "- Environment: python 3.11.7, torch 2.14.1, albumentations 2.0.8" in lines
    without = render_markdown(finalize_results(_sample())).splitlines()
    assert not any(line.startswith("- Environment") for line in without)
    assert not any(line.startswith("- Machine") for line in without)  # files written before it was recorded


def test_the_machine_is_recorded_and_rendered():
    """The CPU's kernels round differently, so a table's numbers depend on it: results name it."""
    recorded = hardware()
    assert set(recorded) == {"cpu", "cpu_features", "cpu_capability", "cuda_devices"}
    results = _sample()
    results["machine"] = {"cpu": "AMD EPYC", "cpu_features": ["avx512_bf16", "avx512f"], "cpu_capability": "AVX512",
                          "cuda_devices": []}
    lines = render_markdown(finalize_results(results)).splitlines()
    assert "- Machine: AMD EPYC with avx512_bf16, avx512f; CUDA: none" in lines
    results["machine"]["cuda_devices"] = ["NVIDIA H200", "NVIDIA H200"]
    assert "- Machine: AMD EPYC with avx512_bf16, avx512f; CUDA: NVIDIA H200, NVIDIA H200" in render_markdown(
        finalize_results(results)).splitlines()


def test_machine_records_the_cpu_flags_that_set_bf16_speed(monkeypatch, tmp_path):
    info = machine()
    assert set(info["cpu_features"]) <= set(SPEED_RELEVANT_CPU_FLAGS) and info["cpu_capability"]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16 sse\n")
    from ablations.framework import provenance as module

    real_path = module.Path
    monkeypatch.setattr(module, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    faked = machine()
    assert faked["cpu"] == "Test CPU 9000" and faked["cpu_features"] == ["amx_bf16", "avx512f", "avx2"]
    assert describe_cpu(faked) == "Test CPU 9000 with amx_bf16, avx512f, avx2"
    assert describe_cpu({"cpu": "Old CPU", "cpu_features": []}).startswith("Old CPU with none of amx_bf16")


def test_git_commit_and_utc_now(tmp_path):
    commit = git_commit().removesuffix("-dirty")
    assert commit == "unknown" or (4 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit))
    assert git_commit(tmp_path) == "unknown"  # not a repository
    now = utc_now()
    assert len(now) == 20 and now[10] == "T" and now.endswith("Z")
    assert git_dirty(tmp_path) is None
    record = provenance()
    assert record["commit"].endswith("-dirty") == bool(record["dirty"])
    assert record["environment"] == library_versions()


def test_framework_modules_import_without_circles():
    """results knows neither render nor publish; render knows results only; nothing imports the runner."""
    import ast

    framework = REPO_ROOT / "ablations" / "framework"

    def imports(name: str) -> set[str]:
        tree = ast.parse((framework / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.rsplit(".", 1)[-1] if node.level or "framework" in node.module else node.module)
        return found

    assert not {"render", "publish", "plots", "runner"} & imports("results")
    assert not {"publish", "runner", "plots"} & imports("render")
    assert "runner" not in imports("publish") | imports("catalog") | imports("table")


# --------------------------------------------------------------------------- #
# every committed results JSON re-renders to exactly its Markdown
# --------------------------------------------------------------------------- #
def _committed_results() -> list[Path]:
    """The committed results files of every declared table (any data kind, quick or full)."""
    from ablations.framework.catalog import all_tables

    candidates = {
        table.results_file(RESULTS_DIR, data_kind=kind, quick=quick)
        for table in all_tables()
        for kind in ("synthetic", "real")
        for quick in (True, False)
    }
    candidates |= set(RESULTS_DIR.glob("*/*/*.quick-synthetic.json"))  # the same table re-run on another CPU
    return sorted(p for p in candidates if p.exists())


def _check_rendered(json_path: Path) -> None:
    diff = markdown_diff(json_path)
    assert diff == "", f"{json_path.with_suffix('.md')} is not the rendering of {json_path.name}:\n{diff}"


@pytest.mark.parametrize(
    "json_path", _committed_results(), ids=lambda p: str(p.relative_to(RESULTS_DIR))
)
def test_committed_results_markdown_is_rendered_from_json(json_path):
    _check_rendered(json_path)


def test_committed_results_check_on_generated_example(tmp_path):
    """The same check on a freshly written table passes, and fails once the Markdown is hand-edited."""
    json_path = tmp_path / "results" / "cswin_unet" / "table5_upsampling.json"
    write_results(copy.deepcopy(_sample()), json_path, plot=False)
    _check_rendered(json_path)
    md = json_path.with_suffix(".md")
    md.write_text(md.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    with pytest.raises(AssertionError):
        _check_rendered(json_path)
