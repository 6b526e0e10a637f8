"""bf16-mixed and torch.compile run through the real recipe on the CPU; bf16 test metrics stay near fp32."""
from __future__ import annotations

import pytest
import torch

from tests.training.helpers import SMOKE, make_cli

#: bf16 test metrics may differ from fp32 by at most this much (DSC points / HD95 voxels) on the
#: synthetic smoke set: bf16 rounds logits to 8 significant bits, which moves argmax near class ties.
BF16_DICE_TOLERANCE = 2.0
BF16_HD95_TOLERANCE = 2.0


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _fit_test(tmp_path, **overrides):
    cli = make_cli(tmp_path, SMOKE, **{"trainer.limit_train_batches": 2, "data.init_args.val_volumes": 0, **overrides})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return cli.model


def test_bf16_mixed_fits_and_tests_within_tolerance_of_fp32(tmp_path, cache):
    # lr 0: both runs test the same (random) weights, which predict every organ somewhere
    fp32 = _fit_test(tmp_path / "fp32", **{"model.init_args.optimizer.lr": 0.0})
    bf16 = _fit_test(tmp_path / "bf16", **{"model.init_args.optimizer.lr": 0.0, "trainer.precision": "bf16-mixed"})
    a, b = fp32.test_report.metrics, bf16.test_report.metrics
    assert a["test/mean_dice"] > 0
    assert abs(a["test/mean_dice"] - b["test/mean_dice"]) <= BF16_DICE_TOLERANCE
    assert abs(a["test/mean_hd95"] - b["test/mean_hd95"]) <= BF16_HD95_TOLERANCE
    # and training under autocast moves the weights
    trained = _fit_test(tmp_path / "bf16-train", **{"trainer.precision": "bf16-mixed"})
    assert torch.isfinite(torch.stack([p.detach().float().sum() for p in trained.parameters()])).all()


@pytest.mark.slow
def test_compile_switch_fits_and_tests(tmp_path, cache):
    model = _fit_test(tmp_path, **{"model.init_args.compile": True})
    assert model._compiled and "test/mean_dice" in model.test_report.metrics
    assert not any("_orig_mod" in k for k in model.state_dict())  # checkpoints keep their keys
