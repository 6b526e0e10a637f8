"""SLAB's decay-schedule table: its rows, the recipe's T kept per mode, and the γ-curve figure."""
from __future__ import annotations

import json

import pytest

from ablations.slab import common
from ablations.slab.table_repbn_decay import TABLE

NET = "model.init_args.net.init_args."


def test_rows_and_naming():
    assert [v.name for v in TABLE.variants] == ["ln", "bn", "repbn", "prepbn_linear", "prepbn_cosine",
                                                "prepbn_step"]
    assert TABLE.command == "python reproduce/table_repbn_decay.py"
    assert all(value is None for v in TABLE.variants for value in v.paper.values())  # unknown in the sources


@pytest.mark.parametrize("schedule", common.SCHEDULES)
def test_schedules_keep_the_recipe_T_in_each_mode(schedule):
    variant = TABLE.variant(f"prepbn_{schedule}")
    full = variant.overrides[NET + "norm_kwargs"]
    quick = variant.quick_overrides[NET + "norm_kwargs"]
    assert full == {**common.norm_kwargs_of(TABLE.recipe), "schedule": schedule}
    assert variant.overrides[NET + "norm"] == "prepbn"
    assert (full["T"], quick["T"]) == (60_000, 192)
    assert quick["schedule"] == schedule and quick["counting"] == "global_step"


def test_norm_rows_change_only_the_norm():
    for name in ("ln", "bn", "repbn"):
        assert TABLE.variant(name).overrides == {NET + "norm": name}


def _run_with_gamma(folder, gammas):
    folder.mkdir(parents=True)
    lines = ["epoch,step,train/loss,train/repbn_gamma"] + [f"0,{i},1.0,{g}" for i, g in enumerate(gammas)]
    lines.insert(2, "0,0,0.5,")  # a row of another metric: no γ
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_gamma_curve_reads_the_csv_log(tmp_path):
    _run_with_gamma(tmp_path / "run", [1.0, 0.5, 0.0])
    assert common.gamma_curve(tmp_path / "run") == ([0, 1, 2], [1.0, 0.5, 0.0])
    assert common.gamma_curve(tmp_path / "missing") == ([], [])


def test_gamma_figure_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "REPO_ROOT", tmp_path)
    _run_with_gamma(tmp_path / "runs" / "lin", [1.0, 0.5, 0.0])
    results = {"paper": "slab", "table": None, "subject": "repbn_decay", "data_kind": "synthetic", "quick": True,
               "metrics": [{"name": "test/top1", "label": "Top-1 (%)", "decimals": 2}],
               "variants": [{"name": "prepbn_linear", "runs": [{"run_dir": "runs/lin"}],
                             "mean": {"test/top1": 70.0}, "std": {"test/top1": 1.0}},
                            {"name": "ln", "runs": [{"run_dir": "runs/none"}], "mean": {}, "std": {}}]}
    png = tmp_path / "t.gamma.png"
    common.plot_gamma_curves(json.loads(json.dumps(results)), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segmentation_host_rows():
    from ablations.slab.table_repbn_decay_cswin_unet import TABLE as SEG

    assert [v.name for v in SEG.variants] == ["ln", "prepbn_linear", "prepbn_cosine", "prepbn_step"]
    assert SEG.variant("ln").overrides[NET + "norm"] == "layernorm"  # the faithful CSWin-UNet
    step = SEG.variant("prepbn_step")
    assert (step.overrides[NET + "T"], step.quick_overrides[NET + "T"]) == (11_160, 243)
    recalibration = {v.name: (v.overrides["trainer.callbacks+"][1]["init_args"]["epochs"],
                              v.quick_overrides["trainer.callbacks+"][1]["init_args"]["epochs"])
                     for v in SEG.variants}
    assert set(recalibration.values()) == {(10, 1)}
