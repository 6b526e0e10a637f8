"""Keep the frozen parts of a staged network in eval mode while the rest trains."""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FrozenPartsInEval"]


class FrozenPartsInEval:
    """LightningModule mixin (put it before the LightningModule base): every child of ``self.net``
    without a trainable parameter stays in eval mode during training, e.g. no ActNorm
    initialisation or BN statistics update in a frozen part. Re-applied after ``train()`` and before
    every training batch, since Lightning may restore recorded module modes after a validation."""

    net: nn.Module

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.frozen_parts_eval()
        return self

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.frozen_parts_eval()

    def frozen_parts_eval(self) -> None:
        """The children of ``self.net`` with no trainable parameter, in eval mode."""
        trained = {id(p) for p in self.net.parameters() if p.requires_grad}
        for child in self.net.children():
            if not any(id(p) in trained for p in child.parameters()):
                child.eval()
