"""ConvFormer's tables: the swapped backbones get their paper configuration, and the α table runs end to end."""
from __future__ import annotations

import json

import pytest

from ablations.convformer.common import paper_configuration
from ablations.convformer.table1_attention_acdc import TABLE as TABLE1
from ablations.convformer.table2_alpha import TABLE as TABLE2
from ablations.framework import runner
from ablations.framework.runner import config_files, run_overrides
from tests.training.helpers import make_cli


def test_a_swapped_backbone_keeps_none_of_the_recipes_setr_arguments(tmp_path):
    variant = TABLE1.variant("patcher_vanilla")
    overrides = run_overrides(TABLE1, variant, 30, tmp_path / "run", None, False, "test")
    overrides.pop("trainer.logger")
    cli = make_cli(tmp_path, config_files(TABLE1, quick=False, data_dir=None) + [TABLE1.synthetic_data], **overrides)
    parsed = cli.config["model.init_args.net.init_args"].as_dict()
    expected = paper_configuration("models.convformer_patcher.ConvFormerPatcher")
    assert {k: parsed[k] for k in expected} == {**expected, "in_channels": 1}
    assert sum(p.numel() for p in cli.model.net.parameters()) == 23_194_184  # the pinned 1-ch / 4-class count


def test_table1_has_every_backbone_with_every_attention_type():
    names = {v.name for v in TABLE1.variants}
    assert names == {f"{b}_{a}" for b in ("setr", "transunet", "patcher")
                     for a in ("vanilla", "reattention", "layerscale", "refiner", "convformer")}
    assert TABLE1.test_checkpoints == ("best", "last")


def test_alpha_table_quick_run_reports_best_and_last_and_draws_the_collapse_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    json_path = runner.main(TABLE2, ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "results"),
                                     "--seeds", "1", "--only", "alpha0.4", "--only", "setr_vanilla"])
    results = json.loads(json_path.read_text())
    by_name = {v["name"]: v["runs"][0]["metrics"] for v in results["variants"]}
    for metrics in by_name.values():
        assert 0.0 <= metrics["test/dice"] <= 100.0 and 0.0 <= metrics["last/test/dice"] <= 100.0
    # the quick SETR has 4 attention layers; each run carries its per-layer collapse scores
    assert sorted(k for k in by_name["alpha0.4"] if k.startswith("collapse/")) == [
        f"collapse/layer_{i:02d}" for i in range(4)]
    assert json_path.with_name(json_path.stem + ".collapse.png").read_bytes()[:4] == b"\x89PNG"
    assert results["variants"][0]["description"].endswith("the release's value")


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.8])
def test_alpha_values_other_than_the_release_are_labelled_as_ours(alpha):
    assert "project's choice" in TABLE2.variant(f"alpha{alpha:g}").description
