"""Resuming from a mid-training checkpoint reproduces the uninterrupted run's final weights."""
from __future__ import annotations

import pytest
import torch

from tests.training.helpers import SMOKE, make_cli

RUN = {
    "trainer.max_epochs": 3,
    "trainer.limit_train_batches": 2,
    "trainer.callbacks": [
        {"class_path": "lightning_modules.callbacks.RNGStateCheckpoint"},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_top_k": -1, "every_n_epochs": 1, "filename": "{epoch}"}},
    ],
    "data.init_args.val_volumes": 0,
    "model.init_args.net.init_args.drop_path_rate": 0.3,  # consumes the RNG during training
}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _fit(tmp_path, ckpt_path=None):
    cli = make_cli(tmp_path, SMOKE, **RUN)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.model.state_dict(), cli.trainer


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tmp_path):
    straight, trainer = _fit(tmp_path / "straight")
    assert trainer.global_step == 6
    checkpoint = next((tmp_path / "straight").rglob("epoch=0.ckpt"))
    resumed, trainer = _fit(tmp_path / "resumed", ckpt_path=str(checkpoint))
    assert trainer.global_step == 6
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_a_different_seed_gives_different_weights(tmp_path):
    """Guards the resume test: weights do depend on the run's randomness."""
    first, _ = _fit(tmp_path / "a")
    RUN_B = {**RUN, "seed_everything": 7, "data.init_args.seed": 7}
    cli = make_cli(tmp_path / "b", SMOKE, **RUN_B)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    second = cli.model.state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)
