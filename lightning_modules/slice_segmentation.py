"""A LightningModule for 2-D segmentation trained and evaluated on single images (ConvFormer: ACDC, ISIC, ICH).

Training: the release's nnU-Net loss, CE + (1 − batch soft Dice without background), 1:1
(:class:`~lightning_modules.losses.NNUNetDiceCELoss`); Adam, lr 1e-4, weight decay 1e-5,
constant LR. Validation and test: the ConvFormer protocol
(:mod:`lightning_modules.metrics.convformer_protocol`) on argmax predictions, in
``"patient"`` mode (statistics summed per patient, ACDC/ICH) or ``"image"`` mode (per
image, ISIC). Every image gives one record keyed by its id; the records of all processes
are gathered, padding repeats dropped, and aggregated in id order
(:func:`~lightning_modules.distributed.gather_cases`), so 1 and N processes give the same
numbers, for ``val/dice`` as for the test report.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lightning_modules.callbacks import publish_test_report
from lightning_modules.distributed import gather_cases
from lightning_modules.losses import NNUNetDiceCELoss
from lightning_modules.metrics import (
    MetricReport,
    convformer_report,
    image_record,
    mean_foreground_dice,
    normalize_eval_mode,
    patient_id,
)
from lightning_modules.schedules import ScheduleName, build_schedule, report_effective_batch
from lightning_modules.segmentation_base import SegmentationTask
from lightning_modules.visualize import display_image

__all__ = ["SliceSegmentationModule"]


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-4, weight_decay=1e-5)


class SliceSegmentationModule(SegmentationTask):
    """Wraps a 2-D network ``net: (B, C_in, H, W) → (B, num_classes, H, W)`` for image-level segmentation.

    Args:
        net: the network (any registered model, built from the config).
        num_classes: including background.
        eval_mode: ``"patient"`` (ACDC, ICH), ``"image"`` (ISIC; the release's ``"slice"`` is
            accepted too) or ``None``: the datamodule's ``eval_mode``.
        optimizer: optimizer factory (default: the release's Adam, lr 1e-4, weight decay 1e-5).
        lr_schedule: ``constant`` (the release), ``poly`` or ``poly_shifted`` (see
            :mod:`lightning_modules.schedules`), stepped every iteration.
        loss_weights: ``(CE, Dice)`` weights, (1, 1) in the release.
        compile: ``torch.compile`` the network in place (``nn.Module.compile``, checkpoints keep
            their keys); ``compile_mode`` is passed on.

    Batches: train ``{"image": float (B, C_in, H, W), "label": int64 (B, H, W)}``; val/test add
    ``"case"`` (list of image ids) and ``"patient"`` (list of patient ids; default: an id's
    first 4 characters).

    Units: ``val/dice`` is the protocol's mean foreground Dice as a **fraction** (as
    ``SegmentationModule``'s ``val/dice``), for ``ModelCheckpoint(monitor="val/dice",
    mode="max")``, the release's model selection. After ``test``, ``test_report`` holds
    ``test/dice``, ``test/iou``, ``test/acc``, ``test/se``, ``test/sp`` in **%** (as
    ``SegmentationModule``'s ``test/mean_dice``), ``test/row_hausdorff_l1`` (the release's
    "HD") and ``test/hd95`` (pixels), each also per class (``test/dice/<class>`` ...), and
    one row per patient (patient mode) or image; it is logged, sent to W&B as a table and
    written to ``test_metrics.json`` by rank 0.

    The net's ``num_classes`` and ``img_size`` are linked from this module's ``num_classes``
    and the datamodule's ``img_size`` (:attr:`cli_links`).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 4,
        eval_mode: Literal["patient", "image", "slice"] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_schedule: ScheduleName = "constant",
        poly_power: float = 0.9,
        loss_weights: tuple[float, float] = (1.0, 1.0),
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.num_classes = int(num_classes)
        self.eval_mode = None if eval_mode is None else normalize_eval_mode(eval_mode)
        self.loss = NNUNetDiceCELoss(num_classes, ce_weight=loss_weights[0], dice_weight=loss_weights[1])
        self.optimizer_factory = optimizer
        self._records: dict[str, dict[str, Any]] = {}
        self.test_report: MetricReport | None = None

    # ------------------------------------------------------------------ set-up and training
    def setup(self, stage: str) -> None:
        datamodule = self.check_num_classes()
        if self.hparams.eval_mode is None:
            mode = getattr(datamodule, "eval_mode", None)
            if mode is None:
                raise ValueError("set model.init_args.eval_mode ('patient' or 'image'): the datamodule has none")
            self.eval_mode = normalize_eval_mode(mode)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        report_effective_batch(self, optimizer, total)
        scheduler = build_schedule(optimizer, self.hparams.lr_schedule, total, self.hparams.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step",
                                                         "name": "train/lr"}}

    # ------------------------------------------------------------------ evaluation (ConvFormer protocol)
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, distances: bool) -> tuple[torch.Tensor, np.ndarray]:
        """Argmax of the softmax (the release) per image, and one record per image in ``self._records``."""
        logits = self(batch["image"])
        prediction = torch.softmax(logits.float(), dim=1).argmax(1).cpu().numpy()  # (B, H, W)
        labels = batch["label"].cpu().numpy()
        cases = batch.get("case") or [f"image{batch_idx:05d}_{i}" for i in range(len(prediction))]
        patients = batch.get("patient") or [patient_id(c) for c in cases]
        for case, patient, pred, label in zip(cases, patients, prediction, labels, strict=True):
            self._records[str(case)] = image_record(pred, label, self.num_classes, patient=str(patient),
                                                    distances=distances)
        return logits, prediction

    def on_validation_epoch_start(self) -> None:
        self._records = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, _ = self._evaluate(batch, batch_idx, distances=False)
        self.log("val/loss", self.loss(logits, batch["label"]), batch_size=len(logits), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        records = gather_cases(self._records)  # every rank's images, each once, sorted by id
        if records:  # equal on every rank: logged everywhere so ModelCheckpoint sees it on each
            self.log("val/dice", mean_foreground_dice(records, self.eval_mode), prog_bar=True)
        self._records = {}

    def on_test_epoch_start(self) -> None:
        self._records = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        _, prediction = self._evaluate(batch, batch_idx, distances=True)
        case = (batch.get("case") or [f"batch{batch_idx:05d}"])[0]
        # stacks of (H, W) gray or (H, W, 3) RGB images and (H, W) maps, as SegmentationOverlays expects
        images = np.stack([display_image(x) for x in batch["image"].float().cpu().numpy()])
        return {"case": str(case), "image": images,
                "label": batch["label"].cpu().numpy(), "prediction": prediction}

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        names = list(getattr(datamodule, "class_names", []))[1:] or [f"class{i}" for i in range(1, self.num_classes)]
        records = gather_cases(self._records)
        unit = "patient (TP/FP/FN/TN summed over its slices)" if self.eval_mode == "patient" else "image"
        protocol = (f"ConvFormer release (utils/evaluation.py), {self.eval_mode} mode: per-{unit} scores, "
                    "mean over cases then foreground classes; argmax of the softmax; row_hausdorff_l1 = the "
                    "release's HD (L1 Hausdorff between mask rows), hd95 = 2-D medpy HD95 in pixels; "
                    "distances per patient = max over its slices")
        data_kind = "synthetic" if getattr(datamodule, "is_synthetic", False) else "real"
        self.test_report = convformer_report(records, self.eval_mode, names,
                                             meta={"protocol": protocol, "data_kind": data_kind})
        self.test_metrics_path = publish_test_report(self, self.test_report)
        self._records = {}
