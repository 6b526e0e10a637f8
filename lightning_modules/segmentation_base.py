"""What every segmentation task module shares: links, compile switch, class check, pretrained start, training step.

A subclass sets ``self.net`` (``(B, C_in, H, W) → (B, num_classes, H, W)``),
``self.num_classes``, ``self.loss`` (with ``forward_with_parts(logits, labels) →
(loss, {name: part})``) and saves ``compile`` / ``compile_mode`` in its hyper-parameters.
"""
from __future__ import annotations

import lightning as L
import torch

from lightning_modules.compile_switch import compile_network
from lightning_modules.grad_layout import align_gradient_strides
from lightning_modules.pretrained import load_pretrained_weights

__all__ = ["SegmentationTask"]


class SegmentationTask(L.LightningModule):
    """Base of :class:`~lightning_modules.segmentation.SegmentationModule` and
    :class:`~lightning_modules.slice_segmentation.SliceSegmentationModule`."""

    #: Arguments LightningCLI links for this task (see :mod:`lightning_modules.cli`).
    cli_links = (
        ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"),
        ("data.init_args.img_size", "model.init_args.net.init_args.img_size"),
    )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_model(self) -> None:
        align_gradient_strides(self)  # before DDP wraps the module: no bucket-stride warning
        if self.hparams.compile:
            compile_network(self, self.net, self.hparams.compile_mode)  # in place: checkpoints keep their keys

    def check_num_classes(self):
        """The attached datamodule (or ``None``); raises if its class count is not ``num_classes``."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != self.num_classes:
            raise ValueError(f"model.init_args.num_classes={self.num_classes} but the data set "
                             f"{type(datamodule).__name__} has {data_classes} classes (background included)")
        return datamodule

    def setup(self, stage: str) -> None:
        self.check_num_classes()

    def on_fit_start(self) -> None:
        # The net's pretrained file (e.g. ImageNet CSWin-T) initialises a fit from scratch only;
        # test/validate/predict and resumed fits take every weight from the Lightning checkpoint.
        # Not in setup(): Lightning fills trainer.ckpt_path only after setup, when it restores.
        load_pretrained_weights(self.net, self.trainer, "fit")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss, parts = self.loss.forward_with_parts(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=len(logits))
        return loss
