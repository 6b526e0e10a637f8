"""reproduce/benchmark_ab.py: the baseline import, the ratios and the report (no timing here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import import_reproduce_script


@pytest.fixture(scope="module")
def ab():
    return import_reproduce_script("benchmark_ab")


def test_baseline_models_import_under_another_name_without_touching_ours(ab, tmp_path):
    import models

    ours_before = sys.modules["models"]
    ab.extract_models("HEAD", tmp_path)
    assert (tmp_path / "models" / "cswin_unet.py").is_file()
    baseline = ab.import_models_as(tmp_path, "baseline_models_under_test")
    try:
        assert sys.modules["models"] is ours_before is models
        module = sys.modules["baseline_models_under_test.cswin_unet"]
        assert Path(module.__file__).is_relative_to(tmp_path)
        assert baseline.__name__ == "models"  # the package keeps its own name internally
        net = module.cswin_unet_test()
        ours = models.create_model("cswin_unet_test")
        ours.load_state_dict(net.state_dict(), strict=True)  # same keys on both sides
        x = torch.randn(1, 1, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(net.eval()(x), ours.eval()(x), rtol=1e-4, atol=1e-5)
    finally:
        for name in [n for n in sys.modules if n.startswith("baseline_models_under_test")]:
            del sys.modules[name]


def test_ratios_are_baseline_over_ours_per_round_and_of_medians(ab):
    times = {"baseline/fp32/train": [2.0, 4.0, 3.0], "ours/fp32/train": [1.0, 1.0, 2.0],
             "baseline/fp32/infer": [1.0, 1.0, 1.0], "ours/fp32/infer": [1.0, 0.5, 2.0]}
    medians, ratios = ab.summarise(times)
    train = ratios["fp32 train step: ours vs baseline"]
    assert train["ratio_of_medians"] == pytest.approx(3.0 / 1.0)
    assert train["median_of_paired_ratios"] == pytest.approx(2.0)  # per round: 2, 4, 1.5
    assert (train["paired_ratio_min"], train["paired_ratio_max"]) == (1.5, 4.0)
    assert train["ratio_of_minimums"] == pytest.approx(2.0 / 1.0)
    assert "bf16 train step (ours) vs baseline fp32" not in ratios  # a variant that did not run
    doc = {
        "command": "python reproduce/benchmark_ab.py", "date": "today",
        "baseline": {"commit": "a" * 40}, "ours": {"commit": "b" * 40, "models_dirty": False},
        "settings": {"batch": 2, "img": 224, "classes": 9, "threads": 2, "rounds": 3, "warmup": 1, "cpu_count": 2,
                     "loadavg_start": (1.0, 1.0, 1.0), "loadavg_end": (2.0, 2.0, 2.0),
                     "steps": {"train": "the step"}},
        "num_params": 10, "ratios": ratios, "medians_s": medians, "times_s": times, "round_loadavg": [1.5, 2.5, 3.5],
        "warmup_s": {"ours/fp32/train": [1.0], "ours/fp32-compiled/train": [301.0, 1.25]},
        "agreement": {"eval_logits_max_abs_diff": 0.0, "eval_logits_max_abs": 1.0, "train_grads_max_abs_diff": 0.0,
                      "train_grads_max_abs": 1.0, "ours_bf16_vs_fp32_eval_logits_max_abs_diff": 0.01},
    }
    text = ab.render_markdown(doc)
    assert "| fp32 train step: ours vs baseline | 3.00× | 2.00× | 1.50–4.00× | 2.00× |" in text
    assert "| ours/fp32/infer | 1.000 | 0.500 |" in text
    assert "only comparable within this run" in text
    assert "ours/fp32-compiled/train 301 s" in text and "ours/fp32-compiled/train 1.25 s" in text
    assert "(2 CPUs, load average" in text  # a JSON written before the machine was recorded
    assert "release's fp32" in text and "; fp32: 1.68–1.96×." in text  # 2.00 × (0.84, 0.98)
    assert "bf16 was not timed" not in text  # an older JSON, from before --precisions
    doc["settings"]["precisions"] = ["fp32"]
    assert "bf16 was not timed (`--precisions fp32`)." in ab.render_markdown(doc)
    doc["machine"] = {"cpu": "Some CPU", "cpu_features": ["amx_bf16", "avx512f"]}
    assert "(2 CPUs, Some CPU with amx_bf16, avx512f, load average" in ab.render_markdown(doc)


def test_compiled_variants_are_compared_and_their_compile_time_reported(ab):
    times = {"baseline/fp32/train": [2.0, 2.0], "ours/fp32-compiled/train": [1.0, 0.5],
             "ours/bf16-compiled/train": [0.5, 0.5]}
    _, ratios = ab.summarise(times)
    assert ratios["fp32 train step, compiled: ours vs baseline"]["ratio_of_minimums"] == pytest.approx(4.0)
    assert ratios["bf16 train step, compiled (ours) vs baseline fp32"]["ratio_of_medians"] == pytest.approx(4.0)
    lines = []
    steps = {name: (lambda n=name: lines.append(n)) for name in times}
    timed, loads, warm = ab.run_rounds(steps, rounds=2, warmup=2)
    assert [len(w) for w in warm.values()] == [2, 2, 2] and len(loads) == 2
    assert all(len(t) == 2 for t in timed.values()) and len(lines) == 4 * 3
