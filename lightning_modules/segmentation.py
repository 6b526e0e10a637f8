"""One LightningModule for 2-D segmentation networks trained on slices and tested on volumes.

Training: ``α·CE + β·Dice`` (the TransUNet-lineage soft Dice), any optimizer from the
config (SGD in the papers), per-iteration poly decay. Testing: the TransUNet
protocol — slice-wise inference with resize, medpy-convention Dice / HD95 per case
and class without spacing, exactly equal on 1 and N processes (the cases of all
ranks are gathered, padding repeats dropped, and aggregated sorted by case id; see
:mod:`lightning_modules.distributed`). After ``test`` the module holds ``test_report`` (a
:class:`~lightning_modules.metrics.MetricReport`: flat ``test/mean_dice``,
``test/dice/<organ>``, ... and one row per case), logs it, sends the per-case rows to
W&B as a ``wandb.Table`` and writes it to ``test_metrics.json``.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics.segmentation import DiceScore

from lightning_modules.callbacks import publish_test_report
from lightning_modules.distributed import gather_cases
from lightning_modules.inference import predict_volume_slicewise
from lightning_modules.losses import CEDiceLoss
from lightning_modules.metrics import MetricReport, per_class_case_metrics, summarize_cases, transunet_report
from lightning_modules.schedules import ScheduleName, build_schedule, report_effective_batch
from lightning_modules.segmentation_base import SegmentationTask


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4, fused=True)


class SegmentationModule(SegmentationTask):
    """Wraps a segmentation network ``net: (B, C_in, H, W) → (B, num_classes, H, W)``.

    Args:
        net: the network (any registered model, built from the config).
        num_classes: including background.
        loss_weights: ``(α, β)`` = (cross-entropy, Dice) weights; the release uses (0.4, 0.6).
        optimizer: optimizer factory (default: the papers' SGD, lr 0.05, momentum 0.9, wd 1e-4, with
            PyTorch's fused update kernel, which rounds within 1 ulp of the per-parameter loop).
        lr_schedule: ``poly`` (the release's sequence: steps 0 and 1 at the base LR, step
            k ≥ 1 at ``base·(1 − (k−1)/T)^poly_power``, stepped every iteration, T = all
            training steps of the run), ``poly_shifted`` (``base·(1 − k/T)^poly_power``, one
            step ahead of the release) or ``constant``.
        official_lr_batch_scaling: the release multiplies the LR by ``batch/24`` when the
            batch is not 24 but divisible by 6; kept on for faithfulness.
        inference_size: slice size at test time (default: the datamodule's ``img_size``).
        test_slice_batch: slices per forward pass at test time.
        hd95_spacing: ``None`` = voxel units (the papers); a tuple switches to spacing-aware HD95.
        test_argmax_over: ``softmax`` (the release) or ``logits`` (equal except at float32 ties).
        compile: ``torch.compile`` the network in place (``nn.Module.compile``, so checkpoints
            keep their keys); ``compile_mode`` is passed on (``None``, ``"max-autotune"``, ...).
            Mixed precision is the trainer's: ``--trainer.precision bf16-mixed``.

    The net's ``num_classes`` and ``img_size`` are linked from this module's
    ``num_classes`` and the datamodule's ``img_size`` (:attr:`cli_links`).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 9,
        loss_weights: tuple[float, float] = (0.4, 0.6),
        optimizer: OptimizerCallable = _default_optimizer,
        lr_schedule: ScheduleName = "poly",
        poly_power: float = 0.9,
        official_lr_batch_scaling: bool = True,
        inference_size: int | None = None,
        test_slice_batch: int = 16,
        hd95_spacing: tuple[float, float, float] | None = None,
        test_argmax_over: Literal["softmax", "logits"] = "softmax",
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.num_classes = num_classes
        self.loss = CEDiceLoss(num_classes, ce_weight=loss_weights[0], dice_weight=loss_weights[1])
        self.optimizer_factory = optimizer
        self.val_dice = DiceScore(num_classes, include_background=False, average="macro",
                                  aggregation_level="global", input_format="index")
        self._test_cases: dict[str, np.ndarray] = {}
        self.test_report: MetricReport | None = None

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        batch_size = getattr(self.trainer.datamodule, "batch_size", None) if self.trainer else None
        if self.hparams.official_lr_batch_scaling and batch_size and batch_size != 24 and batch_size % 6 == 0:
            for group in optimizer.param_groups:
                group["lr"] *= batch_size / 24
                group["initial_lr"] = group["lr"]
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self.trainer else 1
        report_effective_batch(self, optimizer, total)
        scheduler = build_schedule(optimizer, self.hparams.lr_schedule, total, self.hparams.poly_power)
        # "name" is the key LearningRateMonitor logs the LR under
        schedule = {"scheduler": scheduler, "interval": "step", "name": "train/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ------------------------------------------------------------------ validation (monitoring only)
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["label"]), batch_size=len(logits))
        self.val_dice.update(logits.argmax(1), batch["label"])
        self.log("val/dice", self.val_dice, prog_bar=True)  # a fraction; Lightning computes, syncs and resets it

    # ------------------------------------------------------------------ test (TransUNet protocol)
    def _inference_size(self) -> int:
        size = self.hparams.inference_size or getattr(self.trainer.datamodule, "img_size", None)
        if size is None:
            raise ValueError("set inference_size: the datamodule has no img_size")
        return int(size)

    def on_test_epoch_start(self) -> None:
        self._test_cases = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        image = batch["image"][0].cpu().numpy()  # (D, H, W)
        label = batch["label"][0].cpu().numpy()
        case = batch["case"][0] if "case" in batch else f"case{batch_idx:04d}"
        prediction = predict_volume_slicewise(self.net, image, self._inference_size(),
                                              self.hparams.test_slice_batch, self.device,
                                              argmax_over=self.hparams.test_argmax_over)
        metrics = per_class_case_metrics(prediction, label, self.num_classes, self.hparams.hd95_spacing)
        self._test_cases[case] = metrics
        self.log("test/case_dice", metrics[:, 0].mean() * 100.0, batch_size=1)
        return {"case": case, "image": image, "label": label, "prediction": prediction}

    def on_test_epoch_end(self) -> None:
        names = list(getattr(self.trainer.datamodule, "class_names", []))[1:] or [
            f"class{i}" for i in range(1, self.num_classes)]
        protocol = ("TransUNet slice-wise inference; medpy dc/hd95 per case and class, "
                    + ("voxel units (no spacing)" if self.hparams.hd95_spacing is None
                       else f"spacing {self.hparams.hd95_spacing}"))
        data_kind = "synthetic" if getattr(self.trainer.datamodule, "is_synthetic", False) else "real"
        cases = gather_cases(self._test_cases)  # every rank's cases, each once, sorted by case id
        report = transunet_report(summarize_cases(cases, names),
                                  meta={"protocol": protocol, "data_kind": data_kind})
        self.test_report = report
        self.test_metrics_path = publish_test_report(self, report)
