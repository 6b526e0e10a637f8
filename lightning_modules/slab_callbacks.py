"""SLAB's training-time callbacks: the γ schedule of PRepBN from the global step, and BN recalibration.

* :class:`ProgressiveNormSchedule`: before every training batch, sets γ of every
  :class:`~models.layers.repbn.ProgressiveNorm` in ``counting="global_step"`` mode from
  ``trainer.global_step`` (so accumulation and re-run forwards do not distort the schedule),
  logs ``train/repbn_gamma``, and warns (or, ``strict=True``, refuses) when per-forward
  counting would diverge from the step count (accumulation > 1, activation checkpointing).
* :class:`RecalibrateBN`: after fitting, re-estimates only the BatchNorm running statistics with
  ``epochs`` no-grad passes over the training data (model in eval mode, BN layers in train
  mode), the release's ``update_model`` (spec §2.7).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.layers.repbn import ProgressiveNorm

__all__ = ["ProgressiveNormSchedule", "RecalibrateBN", "recalibrate_bn", "uses_activation_checkpointing"]

_CHECKPOINT_FLAGS = ("use_checkpoint", "grad_checkpointing", "gradient_checkpointing", "activation_checkpointing")


def uses_activation_checkpointing(model: nn.Module) -> bool:
    """Whether any submodule sets a usual activation-checkpointing flag (Swin/timm/HF attribute names)."""
    return any(getattr(m, flag, False) is True for m in model.modules() for flag in _CHECKPOINT_FLAGS)


class ProgressiveNormSchedule(L.Callback):
    """Drive PRepBN's γ from ``trainer.global_step``; log it; check the counting assumptions.

    ``activation_checkpointing``: declare it when the model re-runs forwards in a way the flag
    scan of :func:`uses_activation_checkpointing` cannot see (``None``: scan only).
    """

    def __init__(self, log: bool = True, strict: bool = False, activation_checkpointing: bool | None = None) -> None:
        self.log, self.strict, self.activation_checkpointing = log, strict, activation_checkpointing

    @staticmethod
    def norms(model: nn.Module) -> list[ProgressiveNorm]:
        return [m for m in model.modules() if isinstance(m, ProgressiveNorm)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        norms = self.norms(pl_module)
        per_forward = [m for m in norms if m.counting == "per_forward"]
        if not per_forward:
            return
        reasons = []
        if trainer.accumulate_grad_batches > 1:
            reasons.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches}")
        checkpointing = self.activation_checkpointing
        if checkpointing or (checkpointing is None and uses_activation_checkpointing(pl_module)):
            reasons.append("activation checkpointing")
        if reasons:
            message = (f"{len(per_forward)} ProgressiveNorm(counting='per_forward') advance gamma once per training "
                       f"forward, not per optimizer step; with {' and '.join(reasons)} the effective T differs from "
                       "the step count (use counting='global_step' to follow trainer.global_step)")
            if self.strict:
                raise RuntimeError(message)
            warnings.warn(message, UserWarning, stacklevel=2)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        norms = self.norms(pl_module)
        for m in norms:
            if m.counting == "global_step":
                m.set_step(trainer.global_step)
        if self.log and norms:
            pl_module.log("train/repbn_gamma", norms[0].gamma, on_step=True, on_epoch=False, batch_size=1)


def _default_forward(model: nn.Module, batch: Any, input_key: str) -> Any:
    if isinstance(batch, dict):
        return model(batch[input_key])
    if isinstance(batch, list | tuple):
        return model(batch[0])
    return model(batch)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Callable[[], Iterable[Any]], epochs: int = 10,
                   forward: Callable[[nn.Module, Any], Any] | None = None, max_batches: int | None = None,
                   input_key: str = "image") -> int:
    """Re-estimate BN running statistics: ``epochs`` no-grad passes, model in eval, BN layers in train.

    ``batches()`` yields one epoch of (device-ready) batches; ``forward(model, batch)`` runs one
    (default: ``model(batch[input_key])`` for dicts, ``model(batch[0])`` for sequences). Every
    ``_BatchNorm`` (BatchNorm1d/2d/3d, SyncBatchNorm; in SLAB only RepBN's) is updated with its own
    momentum; no parameter, other buffer or counter changes (ProgressiveNorm is in eval: RepBN path,
    no counting). Restores the previous train/eval modes. Returns the number of forwards run.
    """
    forward = forward or (lambda m, b: _default_forward(m, b, input_key))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.train()
    count = 0
    try:
        for _ in range(epochs):
            for i, batch in enumerate(batches()):
                if max_batches is not None and i >= max_batches:
                    break
                forward(model, batch)
                count += 1
    finally:
        for m, training in modes.items():
            m.train(training)
    return count


class RecalibrateBN(L.Callback):
    """After the last training epoch, :func:`recalibrate_bn` for ``epochs`` epochs over the train loader.

    Runs in ``on_train_end`` (before ``trainer.test``); with several processes the running statistics
    are averaged over ranks afterwards. ``resave_last`` (default): write every ``last.ckpt`` the
    checkpoint callbacks wrote again, so that ``test --ckpt_path last.ckpt`` sees the recalibrated
    statistics (the monitored best checkpoints keep the statistics they were selected with).
    ``save_to``: also write a checkpoint of the recalibrated model there.
    """

    def __init__(self, epochs: int = 10, max_batches: int | None = None,
                 forward: Callable[[nn.Module, Any], Any] | None = None, input_key: str = "image",
                 save_to: str | None = None, resave_last: bool = True) -> None:
        self.epochs, self.max_batches, self.forward = epochs, max_batches, forward
        self.input_key, self.save_to, self.resave_last = input_key, save_to, resave_last

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epochs <= 0:
            return
        loader = trainer.train_dataloader
        if loader is None:
            raise RuntimeError("RecalibrateBN: the trainer has no train dataloader")

        def batches():
            for batch in loader:
                yield trainer.strategy.batch_to_device(batch)

        recalibrate_bn(pl_module, batches, self.epochs, self.forward, self.max_batches, self.input_key)
        if trainer.world_size > 1:
            for m in pl_module.modules():
                if isinstance(m, _BatchNorm) and m.running_mean is not None:
                    m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                    m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        if self.resave_last:
            for path in sorted({cb.last_model_path for cb in trainer.checkpoint_callbacks
                                if getattr(cb, "last_model_path", "")}):
                trainer.save_checkpoint(path)
        if self.save_to:
            trainer.save_checkpoint(self.save_to)
