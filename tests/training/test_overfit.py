"""Slow tier (``pytest -m slow``): the smoke network memorises one batch of synthetic slices."""
from __future__ import annotations

import pytest
import torch

from tests.training.helpers import SMOKE, make_cli

pytestmark = pytest.mark.slow


def test_overfits_one_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    cli = make_cli(tmp_path, SMOKE, **{"data.init_args.augment": False})
    model, dm = cli.model, cli.datamodule
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    labels = batch["label"].long()
    assert len(labels.unique()) > 2, "the batch should hold several organs"
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(200):
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(model(batch["image"]), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(batch["image"]).argmax(1)
    foreground = labels > 0
    assert loss.item() < 0.15
    assert (pred[foreground] == labels[foreground]).float().mean() > 0.9
