"""The benchmark: reference files, one model's record, the run document, its Markdown and the entry script."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ablations.framework import benchmarks
from ablations.framework.benchmarks import (
    REFERENCE_LABELS,
    BenchmarkReferenceError,
    benchmark_model,
    load_reference_file,
    load_references,
    reference_files,
    reference_for,
    run_benchmarks,
    select_models,
    write_benchmarks,
)
from ablations.framework.render_benchmarks import render_markdown
from lightning_modules.profiling import time_steps
from models import list_models, model_info

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "results"


# --------------------------------------------------------------------------------------------
# Reference files
# --------------------------------------------------------------------------------------------
def _write_reference(root: Path, folder: str = "toy", **overrides) -> Path:
    document = {
        "paper": folder,
        "quantities": {"macs_tool": "MACs as the toy paper's tool counts them"},
        "models": {"toy_net": {"source": "toy paper, Table 1", "input_size": [1, 32, 32],
                               "params_total": 10, "macs_tool": 7, "macs_all": None}},
    }
    document.update(overrides)
    path = root / "ablations" / folder / "benchmark_references.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_committed_reference_files_load_and_name_registered_models_of_their_paper():
    files = reference_files()
    assert REPO_ROOT / "ablations" / "cswin_unet" / "benchmark_references.json" in files
    for path in files:
        for name, entry in load_reference_file(path).items():
            info = model_info(name)  # raises for a model that is not registered
            assert info.paper == path.parent.name
            assert entry["file"] == path.relative_to(REPO_ROOT).as_posix() and entry["source"]
    cswin = load_references()["cswin_unet"]
    # the official counts that tests/test_complexity.py checks our model against
    assert cswin["values"] == {"params_total": 23_568_492, "macs_conv_linear": 4_707_035_648,
                               "macs_all": 5_014_112_768, "macs_thop": 4_723_493_376}
    assert list(cswin["labels"])[:3] == list(REFERENCE_LABELS)  # the shared quantities first
    assert "thop" in cswin["labels"]["macs_thop"]


def test_a_reference_file_is_validated(tmp_path):
    path = _write_reference(tmp_path)
    assert reference_files(tmp_path) == [path]
    entry = load_reference_file(path)["toy_net"]
    assert entry["values"] == {"params_total": 10, "macs_all": None, "macs_tool": 7}
    assert entry["labels"]["macs_tool"] == "MACs as the toy paper's tool counts them"
    assert reference_for("toy_net", (1, 32, 32), {"toy_net": entry}) == entry
    assert reference_for("toy_net", (1, 64, 64), {"toy_net": entry}) is None  # measured at another size
    assert reference_for("other_net", (1, 32, 32), {"toy_net": entry}) is None


@pytest.mark.parametrize(
    ("models", "overrides", "message"),
    [
        ({"toy_net": {"source": "s", "input_size": [1, 8, 8], "flops": 3}}, {}, r"unknown key\(s\) \['flops'\]"),
        ({"toy_net": {"input_size": [1, 8, 8], "params_total": 3}}, {}, 'missing "source"'),
        ({"toy_net": {"source": " ", "input_size": [1, 8, 8]}}, {}, 'missing "source"'),
        ({"toy_net": {"source": "s", "params_total": 3}}, {}, '"input_size"'),
        ({"toy_net": {"source": "s", "input_size": [1, 8, 8], "params_total": 2.5}}, {}, "non-negative integer"),
        ({"toy_net": {"source": "s", "input_size": [1, 8, 8]}}, {"paper": "elsewhere"}, "in the folder 'toy'"),
        ({"toy_net": {"source": "s", "input_size": [1, 8, 8]}}, {"quantities": {"macs_all": "x"}}, "redefines"),
        ({"toy_net": {"source": "s", "input_size": [1, 8, 8]}}, {"comment": "x"}, "unknown top-level key"),
        ({}, {}, '"models" must be a non-empty object'),
    ],
)
def test_a_bad_reference_file_raises_naming_the_file(tmp_path, models, overrides, message):
    path = _write_reference(tmp_path, models=models, **overrides)
    with pytest.raises(BenchmarkReferenceError, match=message) as info:
        load_reference_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_model_in_two_reference_files_raises(tmp_path):
    first = _write_reference(tmp_path, "toy")
    second = _write_reference(tmp_path, "toy_two")
    with pytest.raises(BenchmarkReferenceError, match="toy_net.*both"):
        load_references([first, second])


def test_an_unreadable_reference_file_raises_naming_the_file(tmp_path):
    path = tmp_path / "ablations" / "toy" / "benchmark_references.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BenchmarkReferenceError, match="not a readable JSON file"):
        load_reference_file(path)


# --------------------------------------------------------------------------------------------
# One model, one run
# --------------------------------------------------------------------------------------------
def test_benchmark_model_reports_fp32_and_bf16_train_steps():
    record = benchmark_model("cswin_unet_test", warmup=0, iters=1, cuda=False)
    assert record["macs_all"] >= record["macs_conv_linear"] > 0
    assert record["reference"] is None and record["reference_match"] is None
    assert set(record["cpu"]) == {"32-true", "bf16-mixed"}
    for precision, run in record["cpu"].items():
        assert run["precision"] == precision and run["threads"] >= 1
        assert run["interleaved_with"] == ["32-true", "bf16-mixed"]
        for step in ("fwd", "fwd_bwd"):
            assert run[step]["img_per_s"] > 0 and len(run[step]["times_ms"]) == 1
        assert run["fwd_bwd"]["peak_mem_mib"] > run["fwd"]["peak_mem_mib"] > 0
    assert record["cuda"] is None
    json.dumps(record)  # serialisable as it is


def test_time_steps_runs_the_steps_round_robin():
    calls = []
    steps = {key: (lambda key=key: calls.append(key)) for key in ("a", "b", "c")}
    times = time_steps(steps, warmup=1, iters=2)
    assert calls == ["a", "b", "c"] * 3
    assert {key: len(t) for key, t in times.items()} == {"a": 2, "b": 2, "c": 2}


def test_select_models_needs_a_match():
    assert select_models("cswin_unet*") == [n for n in list_models("cswin_unet*") if not n.endswith("_test")]
    with pytest.raises(ValueError, match="include-test"):
        select_models("cswin_unet_test")


def test_run_benchmarks_keeps_going_after_a_failure_and_writes_its_rendering(tmp_path, monkeypatch):
    def fake(name, **kwargs):
        if name == "cswin_unet":
            raise RuntimeError("boom | bad")
        return {"model": name, "input_size": [3, 64, 64], "params_total": 5, "macs_conv_linear": 2,
                "macs_all": 3, "reference": None, "cpu": {}, "cuda": None}

    monkeypatch.setattr(benchmarks, "benchmark_model", fake)
    document = run_benchmarks(["cswin_unet", "cswin_unet_test"], command="python reproduce/benchmark.py -x",
                              cuda=False)
    assert document["schema_version"] == benchmarks.SCHEMA_VERSION
    assert document["command"] == "python reproduce/benchmark.py -x"
    assert {"commit", "dirty", "created", "environment", "machine"} <= set(document)
    assert document["settings"]["precisions"] == ["32-true", "bf16-mixed"]
    failed, ok = document["models"]
    assert failed["model"] == "cswin_unet" and "RuntimeError: boom" in failed["error"]
    assert "error" not in ok
    json_path, md_path = write_benchmarks(document, tmp_path / "out")
    assert md_path.read_text() == render_markdown(json.loads(json_path.read_text()))
    md = md_path.read_text()
    assert "## Failures" in md and "boom \\| bad" in md


def test_run_benchmarks_rejects_bad_settings():
    with pytest.raises(ValueError, match="precision"):
        run_benchmarks(["cswin_unet_test"], command="x", precisions=("fp8",))
    with pytest.raises(ValueError, match=">= 1"):
        run_benchmarks(["cswin_unet_test"], command="x", iters=0)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _timing(img_per_s: float, peak: float) -> dict:
    return {"median_ms": 1e3 / img_per_s, "min_ms": 1e3 / img_per_s, "img_per_s": img_per_s,
            "times_ms": [1e3 / img_per_s], "peak_mem_mib": peak}


def _sample_document() -> dict:
    cswin = load_references()["cswin_unet"]
    both = ["32-true", "bf16-mixed"]
    cpu = {"32-true": {"precision": "32-true", "threads": 2, "interleaved_with": both, "fwd": _timing(4.0, 48.0),
                       "fwd_bwd": _timing(1.0, 210.0)},
           "bf16-mixed": {"precision": "bf16-mixed", "threads": 2, "interleaved_with": both,
                          "fwd": _timing(6.0, 30.0), "fwd_bwd": _timing(2.5, 150.0)}}
    cuda = {p: dict(run, device="NVIDIA H200") for p, run in cpu.items()}
    record = {
        "model": "cswin_unet", "paper": "cswin_unet", "task": "segmentation", "input_size": [3, 224, 224],
        "batch_size": 1, "params_total": 23_568_492, "params_trainable": 23_568_492, "weights_mib": 89.9,
        "macs_conv_linear": 4_707_035_648, "macs_all": 5_014_112_770,
        "macs_all_by_op": {"aten.addmm": 4_084_727_808, "aten.convolution": 929_384_962},
        "reference": cswin, "reference_match": {"params_total": True, "macs_conv_linear": True, "macs_all": False},
        "cpu": cpu, "cuda": cuda,
    }
    failed = {"model": "broken_net", "input_size": [1, 32, 32, 32], "error": "Traceback ...\nRuntimeError: boom | bad"}
    return {
        "schema_version": 2, "commit": "abc1234-dirty", "dirty": True, "created": "2026-12-01T10:00:00Z",
        "environment": {"python": "3.11.7", "torch": "2.14.1"}, "command": "python reproduce/benchmark.py",
        "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "cpu_usable": 2, "torch_threads": 2, "load_avg_1m": 0.5,
                    "cuda_devices": ["NVIDIA H200"]},
        "settings": {"batch_size": 1, "warmup": 3, "iters": 20, "precisions": ["32-true", "bf16-mixed"],
                     "cuda_warmup": 10, "cuda_iters": 50, "cuda": True, "elapsed_s": 61.0},
        "mac_conventions": {"macs_conv_linear": "hooks", "macs_all": "flop counter"},
        "models": [record, failed],
    }


def _row(md: str, *starts: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith("| " + " | ".join(starts) + " |"))
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]  # escaped pipes stay in their cell


def test_markdown_of_a_sample_document():
    md = render_markdown(_sample_document())
    assert "Absolute CPU times are only comparable within one run" in md
    assert "timed round-robin" in md
    assert "`abc1234-dirty` (tracked code outside `results/` had uncommitted changes)" in md
    assert _row(md, "cswin_unet", "3×224×224") == ["cswin_unet", "3×224×224", "23.57", "4.71", "5.01",
                                                   "23.57", "4.71", "5.01"]
    assert _row(md, "cswin_unet", "CPU", "fp32")[3:] == ["4.00", "1.00", "1,000.0", "1.00×", "48.0 / 210.0"]
    assert _row(md, "cswin_unet", "CPU", "bf16 autocast")[3:] == ["6.00", "2.50", "400.0", "2.50×", "30.0 / 150.0"]
    assert _row(md, "cswin_unet", "CUDA (NVIDIA H200)", "bf16 autocast")[6] == "2.50×"
    assert "| cswin_unet | MACs, Conv + Linear only | 4,707,035,648 | 4,707,035,648 | exact |" in md
    assert "| cswin_unet | MACs, all matrix products | 5,014,112,770 | 5,014,112,768 | +2 (+0.000%) |" in md
    assert "| MACs, thop.profile as the official test.py" in md and "| not computed |" in md
    assert f"{load_references()['cswin_unet']['source']} (`ablations/cswin_unet/benchmark_references.json`)" in md
    failed = _row(md, "broken_net", "1×32×32×32")
    assert "boom \\| bad" in failed[2] and len(failed) == 8  # pipe escaped, one cell per column
    assert render_markdown(_sample_document()) == md  # deterministic


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("benchmarks.json")), ids=lambda p: str(p.parent.name))
def test_committed_markdown_is_the_rendering_of_the_committed_json(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema_version"] == benchmarks.SCHEMA_VERSION
    assert path.with_suffix(".md").read_text(encoding="utf-8") == render_markdown(data)


# --------------------------------------------------------------------------------------------
# Entry script
# --------------------------------------------------------------------------------------------
def test_entry_script_reports_a_pattern_without_models_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "reproduce/benchmark.py", "--models", "cswin_unet_test", "--out-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "include-test" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "benchmarks.json").exists()


@pytest.mark.parametrize("name", ["train_step_ab", "train_step_ab_intel_xeon_amx", "amd_epyc_zen1/train_step_ab"])
def test_committed_train_step_ab_markdown_is_the_rendering_of_its_json(name):
    """The A/Bs of the three CPUs (ratios differ by CPU)."""
    import benchmark_ab  # reproduce/ is on the test path

    path = RESULTS / "cswin_unet" / f"{name}.json"
    assert path.with_suffix(".md").read_text() == benchmark_ab.render_markdown(json.loads(path.read_text()))


def test_committed_data_check_benchmark_markdown_is_the_rendering_of_its_json():
    import benchmark_data_check

    path = RESULTS / "data_check_benchmark.json"
    assert path.with_suffix(".md").read_text() == benchmark_data_check.render(json.loads(path.read_text()))


def test_a_model_with_example_inputs_gets_them_and_tuple_outputs_train():
    from models import create_model

    torch = pytest.importorskip("torch")
    decoder = create_model("glare_decoder_test")  # forward(z, [v1, v0], [e0, e1]): several inputs, nested
    torch.manual_seed(0)
    x, *rest = benchmarks.model_inputs(decoder, model_info("glare_decoder_test").input_size, 2)
    bound = benchmarks._BoundInputs(decoder, tuple(rest))
    with torch.no_grad():
        torch.testing.assert_close(bound(x), decoder(x, *rest), rtol=0, atol=0)
    assert len(list(bound.buffers())) == len(list(decoder.buffers())) + 4  # v1, v0, e0, e1 move with .to()
    assert not any(k.startswith("rest_") for k in bound.state_dict())

    record = benchmark_model("glare_decoder_test", warmup=0, iters=1, precisions=("32-true",), cuda=False)
    assert record["input_shapes"] == [[1, 3, 4, 4], [1, 64, 8, 8], [1, 32, 16, 16], [1, 32, 16, 16], [1, 64, 8, 8]]
    assert record["params_total"] == sum(p.numel() for p in decoder.parameters())
    assert record["macs_conv_linear"] > 0 and record["cpu"]["32-true"]["fwd_bwd"]["img_per_s"] > 0
    vqgan = benchmark_model("glare_vqgan_test", warmup=0, iters=1, precisions=("32-true",), cuda=False)
    assert "input_shapes" not in vqgan  # one input tensor, as before; its output is (image, codebook loss)
    assert vqgan["cpu"]["32-true"]["fwd_bwd"]["img_per_s"] > 0

    torch.manual_seed(0)
    (plain,) = benchmarks.model_inputs(torch.nn.Identity(), (3, 8, 8), 2)  # no example_inputs: one randn
    torch.manual_seed(0)
    torch.testing.assert_close(plain, torch.randn(2, 3, 8, 8), rtol=0, atol=0)


def test_counts_only_mode_counts_on_the_meta_device_as_on_real_tensors():
    real = benchmark_model("glare_decoder_test", warmup=0, iters=1, precisions=("32-true",), cuda=False)
    counts = benchmark_model("glare_decoder_test", timing=False)
    assert counts["cpu"] is None and counts["cuda"] is None
    for key in ("params_total", "params_trainable", "macs_conv_linear", "macs_all", "macs_all_by_op", "input_shapes"):
        assert counts[key] == real[key], key
    assert counts["macs_all_by_op"]["torchvision.deform_conv2d"] > 0  # the warps are counted
    document = benchmarks.run_benchmarks(["glare_decoder_test"], command="test", timing=False)
    assert document["settings"]["timing"] is False and "Counts only" in render_markdown(document)
