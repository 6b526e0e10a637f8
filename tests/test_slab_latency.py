"""reproduce/benchmark_slab_latency.py: quick mode writes the JSON, its Markdown and the plot (no timing asserts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import import_reproduce_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return import_reproduce_script("benchmark_slab_latency")


def test_quick_run_writes_json_markdown_and_plot(bench, tmp_path):
    assert bench.main(["--quick", "--rounds", "2", "--warmup", "0", "--no-cuda", "--out-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "latency.json").read_text())
    assert doc["schema"] == bench.SCHEMA and doc["settings"]["quick"] is True
    for key in ("commit", "dirty", "created", "environment", "command"):
        assert key in doc
    assert {"load_avg_1m", "torch_threads", "cpu"} <= set(doc["machine"]) and len(doc["load_avg_end"]) == 3
    assert "--quick" in doc["command"]
    keys = [row["key"] for row in doc["models"]]
    assert keys == [key for key, *_ in bench.FORMS] and keys[0] == bench.BASELINE
    ratios = doc["cpu"]["ratios"]
    assert ratios[bench.BASELINE]["median_of_paired_ratios"] == 1.0
    assert all(v > 0 for r in ratios.values() for v in r.values())
    assert all(doc["cpu"]["timings"][k]["img_per_s"] > 0 for k in keys)
    assert doc["merge_max_abs_diff"] < 1e-4  # merged SLAB computes the unmerged model
    merged = {row["key"]: row for row in doc["models"]}
    assert merged["slab_merged"]["merged"] and not merged["slab_unmerged"]["merged"]
    layer, model = doc["layer_sweep"]["cpu"]["points"], doc["model_sweep"]["cpu"]["points"]
    assert [p["tokens"] for p in layer] == [g * g for g in bench.GRIDS["quick"]]
    assert all(p["ratios"]["sla"]["ratio_of_medians"] > 0 for p in layer)
    assert all(p["ratios"]["slab_merged"]["ratio_of_medians"] > 0 for p in model)
    assert doc["cuda"] is None
    assert "1" in doc["thread_check"]["median_ms"] and all(v > 0 for v in doc["thread_check"]["median_ms"].values())
    md = (tmp_path / "latency.md").read_text()
    assert md == bench.render_markdown(doc) and "shared" in md and "Thread check" in md
    assert str(doc["machine"]["load_avg_1m"]) in md
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "latency.md").unlink()
    assert bench.main(["--render-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "latency.md").read_text() == md


def test_bad_settings_are_refused(bench):
    with pytest.raises(ValueError, match="family"):
        bench.run(family="pvt")
    with pytest.raises(ValueError, match="rounds"):
        bench.run(rounds=0)


def test_committed_markdown_is_the_rendering_of_the_committed_json(bench):
    path = REPO / "results" / "slab" / "latency.json"
    if not path.is_file():
        pytest.skip("results/slab/latency.json not written yet")
    doc = json.loads(path.read_text())
    assert (path.parent / "latency.md").read_text() == bench.render_markdown(doc)
    assert (path.parent / "latency.png").is_file()


def test_cswin_unet_family_builds_the_five_forms_of_the_slab_extension(bench):
    import torch

    forms = bench.build_forms("cswin_unet", quick=True)
    assert list(forms) == [key for key, *_ in bench.FORMS]
    assert forms["ln_softmax"]["constructor"] == "cswin_unet_test(norm='layernorm', attention='cswin')"
    assert forms["slab_merged"]["merged"] and forms["slab_merged"]["constructor"].endswith(".merge()")
    assert bench.merge_difference(forms, torch.randn(2, 3, 64, 64)) < 1e-4
