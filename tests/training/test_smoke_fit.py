"""Smoke fit + test of cswin_unet_test on synthetic Synapse volumes through the real recipe and loader."""
from __future__ import annotations

import json

import pytest
import torch

from tests.training.helpers import SMOKE, make_cli


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("REPRO_CACHE_DIR", str(path))
    return path


def test_smoke_fit_and_test_write_per_class_metrics(tmp_path, cache):
    cli = make_cli(tmp_path, SMOKE)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    trainer.test(model, datamodule=dm, verbose=False)
    run = tmp_path / "run"
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["meta"]["data_kind"] == "synthetic" and report["meta"]["num_cases"] == 1
    organs = ["aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]
    assert sorted(report["metrics"]) == sorted(["test/mean_dice", "test/mean_hd95"] + [f"test/dice/{o}" for o in organs]
                                               + [f"test/hd95/{o}" for o in organs])
    assert 0.0 <= report["metrics"]["test/mean_dice"] <= 100.0
    assert model.test_report.metrics == report["metrics"]
    assert [row["case"] for row in report["cases"]] == ["case0008"]
    metrics_csv = (run / "metrics.csv").read_text()
    assert "test/dice/aorta" in metrics_csv and "train/loss" in metrics_csv and "train/lr" in metrics_csv
    assert (run / "last.ckpt").exists() or any(run.rglob("last.ckpt"))
    assert any((run / "overlays").glob("val_epoch000.png")) and any((run / "overlays").glob("test_*.png"))


def test_poly_schedule_and_official_lr_batch_scaling(tmp_path, cache):
    # batch 12 is divisible by 6 and not 24: the release scales lr 0.05 by 12/24
    cli = make_cli(tmp_path, SMOKE, **{"data.init_args.batch_size": 12, "trainer.limit_train_batches": 3,
                                       "trainer.max_epochs": 2, "data.init_args.val_volumes": 0})
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    trainer.fit(model, datamodule=dm)
    rows = [line.split(",") for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    lrs = [float(r[header.index("train/lr")]) for r in rows[1:] if r[header.index("train/lr")]]
    total = trainer.global_step
    assert total == 4  # 16 synthetic slices at batch 12 = 2 steps per epoch, 2 epochs
    # the release's lag: steps 0 and 1 at the base LR, step k >= 1 at base·(1 − (k−1)/T)^0.9
    expected = [0.025 * (1 - max(step - 1, 0) / total) ** 0.9 for step in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6)
