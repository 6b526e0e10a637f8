"""Image classification (ImageNet-1K) with the Swin-codebase recipe SLAB trains with (spec §3).

Training: AdamW (lr 5e-4, weight decay 0.05 except on 1-D parameters, biases and the
net's ``no_weight_decay()`` names, betas 0.9/0.999, eps 1e-8); the LR, warm-up LR (5e-7)
and minimum LR (5e-6) scaled by the effective batch / 512 (the release's linear rule);
linear warm-up over ``warmup_epochs`` then cosine decay, per optimizer step
(:func:`~lightning_modules.schedules.warmup_cosine_factor`); timm's ``Mixup`` (mixup 0.8,
CutMix 1.0, switch 0.5, label smoothing 0.1 folded into the soft targets) with
``SoftTargetCrossEntropy``, or cross-entropy with label smoothing when both alphas are 0.
Gradient clipping (5.0, norm) is the trainer's ``gradient_clip_val``.

Mixup is applied here, in ``training_step``, not in the datamodule: it needs the class
count and belongs with the loss (soft targets), acts on whole batches on the device, and
leaves the datamodule's hard labels for evaluation and other tasks. Its draws use NumPy's
global RNG, seeded per batch from ``(data seed, batches started, rank)`` and restored
afterwards, so they do not depend on anything else the run draws and a resumed run replays them.

EMA (``ema=True``): timm's ``ModelEmaV3`` (decay 0.9999, no warm-up, as the release's
``main_ema.py`` with timm's ModelEma) updated after every optimizer step; validation and
test then evaluate the EMA weights **in place of** the trained ones (``meta["weights"]``
says which). The EMA copy is in the checkpoint (``ema.module.*``).

Evaluation: ``val/top1`` and ``val/top5`` are torchmetrics ``MulticlassAccuracy`` (micro,
``top_k`` 1 and 5) as **fractions**, for monitoring; under DDP they count the few padding
repeats of Lightning's ``DistributedSampler``. The test report is exact on any number of
processes: each image's label and top-5 classes are kept by its path, gathered with
:func:`~lightning_modules.distributed.gather_cases` (repeats dropped), and ``test/top1``,
``test/top5`` (**%**) computed from those rows. With fewer than 5 classes, top-5 is clamped
to top-C (then every image counts as correct), with a warning; ``meta["top5_k"]`` says so.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.imagenet import isolated_rng
from datamodules.transforms import item_seed
from lightning_modules.callbacks import publish_test_report
from lightning_modules.compile_switch import compile_network
from lightning_modules.distributed import gather_cases
from lightning_modules.grad_layout import align_gradient_strides
from lightning_modules.metrics import MetricReport
from lightning_modules.schedules import build_warmup_cosine

__all__ = ["ClassificationModule", "weight_decay_groups"]


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)


def weight_decay_groups(net: nn.Module) -> list[dict[str, Any]]:
    """``[{"params": decayed}, {"params": not decayed, "weight_decay": 0.0}]``, the release's split.

    Not decayed: 1-D parameters (norms, scalars), ``*.bias``, the names of ``net.no_weight_decay()``
    and names containing a keyword of ``net.no_weight_decay_keywords()``.
    """
    skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    keywords = tuple(net.no_weight_decay_keywords()) if hasattr(net, "no_weight_decay_keywords") else ()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        plain = param.ndim <= 1 or name.endswith(".bias") or name in skip or any(k in name for k in keywords)
        (no_decay if plain else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class ClassificationModule(L.LightningModule):
    """Wraps ``net: (B, 3, S, S) → logits (B, num_classes)`` (module docstring).

    Args:
        net: the network (e.g. a SLAB DeiT, or any timm ViT).
        num_classes: linked to the net's; must equal the datamodule's.
        optimizer: factory called with parameter groups (default AdamW as above).
        lr_batch_scaling: scale the LR, ``warmup_lr`` and ``min_lr`` by effective batch / ``reference_batch``.
        warmup_epochs, warmup_lr, min_lr: the schedule (LRs before scaling; the base LR is the optimizer's).
        schedule_lag: the Swin loop's one-step lag of the LR (``warmup_cosine_factor``'s ``lag``).
        label_smoothing, mixup, cutmix, mixup_prob, mixup_switch_prob, mixup_mode: timm ``Mixup``
            (off when ``mixup`` and ``cutmix`` are 0; smoothing then goes to the cross-entropy).
        ema, ema_decay: evaluate an EMA of the weights (module docstring).
        compile, compile_mode: ``torch.compile`` the network in place (checkpoints keep their keys).

    Batches: train ``{"image": float (B, 3, S, S), "label": int64 (B,)}``; val/test add ``"case"``
    (list of relative paths).
    """

    cli_links = (
        ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"),
        ("data.init_args.img_size", "model.init_args.net.init_args.img_size"),
    )

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 1000,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_batch_scaling: bool = True,
        reference_batch: int = 512,
        warmup_epochs: float = 20,
        warmup_lr: float = 5e-7,
        min_lr: float = 5e-6,
        schedule_lag: bool = True,
        label_smoothing: float = 0.1,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        ema: bool = False,
        ema_decay: float = 0.9999,
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.num_classes = int(num_classes)
        self.optimizer_factory = optimizer
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob,
                                  switch_prob=mixup_switch_prob, mode=mixup_mode, label_smoothing=label_smoothing,
                                  num_classes=self.num_classes)
        self.top_k = min(5, self.num_classes)
        self.val_top1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(self.num_classes, top_k=self.top_k, average="micro")
        self.ema = None
        if ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=ema_decay)
            self.ema.requires_grad_(False)  # not trained (and no unused parameters under DDP)
        self._ema_step = -1
        self._records: dict[str, dict[str, Any]] = {}
        self.test_report: MetricReport | None = None

    # ------------------------------------------------------------------ set-up
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def eval_net(self) -> nn.Module:
        """The weights evaluated: the EMA copy when ``ema``, else the trained net."""
        return self.ema.module if self.ema is not None else self.net

    def configure_model(self) -> None:
        align_gradient_strides(self)  # before DDP wraps the module: no bucket-stride warning
        if self.hparams.compile:
            compile_network(self, self.net, self.hparams.compile_mode)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != self.num_classes:
            raise ValueError(f"model.init_args.num_classes={self.num_classes} but the data set "
                             f"{type(datamodule).__name__} has {data_classes} classes")
        if self.num_classes < 5:
            rank_zero_warn(f"{self.num_classes} classes: test/top5 and val/top5 are top-{self.num_classes} "
                           "accuracy (every image counts as correct)")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(weight_decay_groups(self.net))
        base_lr = float(optimizer.defaults["lr"])
        trainer = self.trainer
        total = max(int(trainer.estimated_stepping_batches), 1)
        accumulate = trainer.accumulate_grad_batches
        per_epoch = max(1, math.ceil(trainer.num_training_batches / accumulate))
        batch = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None else None
        effective = batch * trainer.world_size * accumulate if batch else None
        scale = effective / self.hparams.reference_batch if self.hparams.lr_batch_scaling and effective else 1.0
        if self.hparams.lr_batch_scaling and not effective:
            rank_zero_warn("lr_batch_scaling: the datamodule has no batch_size; the LR is not scaled")
        for group in optimizer.param_groups:
            group["lr"] *= scale
        warmup = int(self.hparams.warmup_epochs * per_epoch)
        scheduler = build_warmup_cosine(optimizer, total, warmup, self.hparams.warmup_lr / base_lr,
                                        self.hparams.min_lr / base_lr, lag=self.hparams.schedule_lag)
        rank_zero_info(f"effective batch {effective} = {batch} per device × {trainer.world_size} process(es) × "
                       f"{accumulate} accumulated; LR {base_lr:g} × {scale:g} = {base_lr * scale:g} "
                       f"(warm-up from {self.hparams.warmup_lr * scale:g} over {warmup} steps, cosine to "
                       f"{self.hparams.min_lr * scale:g}); {total} optimizer steps")
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        if self.mixup_fn is not None:
            if len(images) % 2:
                raise ValueError(f"Mixup needs an even batch, got {len(images)} images (the ImageNet datamodule "
                                 "drops the last incomplete batch; use an even batch_size)")
            with isolated_rng(self._mixup_seed(batch_idx)):
                images, targets = self.mixup_fn(images, labels)
            logits = self(images)
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()  # SoftTargetCE
        else:
            logits = self(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def _mixup_seed(self, batch_idx: int) -> int:
        """``item_seed(data seed, batches started so far, rank)``: unique per batch, replayed on resume."""
        if self._trainer is None:
            return item_seed(0, batch_idx, 0)
        seed = int(getattr(self.trainer.datamodule, "seed", 0) or 0)
        started = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready  # restored from checkpoints
        return item_seed(seed, started, self.global_rank)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None and self.global_step != self._ema_step:  # once per optimizer step
            self.ema.update(self.net, step=self.global_step)
            self._ema_step = self.global_step

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.eval_net(batch["image"]).float()
        labels = batch["label"]
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        size = len(labels)
        self.log("val/loss", F.cross_entropy(logits, labels), batch_size=size, sync_dist=True)
        self.log("val/top1", self.val_top1, prog_bar=True, batch_size=size)
        self.log("val/top5", self.val_top5, batch_size=size)

    def on_test_epoch_start(self) -> None:
        self._records = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.eval_net(batch["image"]).float()
        topk = torch.topk(logits, self.top_k, dim=1).indices.cpu().tolist()
        cases = batch.get("case") or [f"batch{batch_idx:06d}_{i}" for i in range(len(topk))]
        for case, label, top in zip(cases, batch["label"].cpu().tolist(), topk, strict=True):
            self._records[str(case)] = {"label": int(label), "topk": [int(k) for k in top]}

    def on_test_epoch_end(self) -> None:
        records = gather_cases(self._records)  # every rank's images, each once, sorted by path
        self.test_report = classification_report(records, self.top_k, self._meta(len(records)))
        self.test_metrics_path = publish_test_report(self, self.test_report)
        self._records = {}

    def _meta(self, num_images: int) -> dict[str, Any]:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        size = getattr(datamodule, "img_size", None)
        crop = getattr(datamodule, "crop_ratio", None)
        return {
            "protocol": (f"top-1 / top-{self.top_k} accuracy (%) over every image once"
                         + (f"; shorter side resized to {int(size / crop)} (bicubic), centre crop {size}"
                            if size and crop else "")),
            "data_kind": "synthetic" if getattr(datamodule, "is_synthetic", False) else "real",
            "num_images": num_images, "num_classes": self.num_classes, "top5_k": self.top_k,
            "weights": "EMA" if self.ema is not None else "model",
        }


def classification_report(records: dict[str, dict[str, Any]], top_k: int = 5,
                          meta: dict[str, Any] | None = None) -> MetricReport:
    """``{case: {"label", "topk"}}`` (sorted) → ``test/top1``, ``test/top5`` (%) and one row per image."""
    rows = []
    for case, record in records.items():
        label, top = record["label"], record["topk"]
        rows.append({"case": case, "label": label, "prediction": top[0], "correct": float(top[0] == label),
                     "top5_correct": float(label in top[:top_k])})
    n = len(rows)
    top1 = 100.0 * sum(r["correct"] for r in rows) / n if n else None
    top5 = 100.0 * sum(r["top5_correct"] for r in rows) / n if n else None
    return MetricReport(metrics={"test/top1": top1, "test/top5": top5}, cases=rows, meta=dict(meta or {}))
