"""Learning-rate schedules stepped every optimizer step (``interval: step``).

``build_schedule`` returns a ``LambdaLR`` whose factor for optimizer step k (0-based,
the k-th call of ``optimizer.step()``) is ``lr_lambda(k)``: Lightning calls
``scheduler.step()`` after every optimizer step, so step k runs at ``base · lr_lambda(k)``.

Poly decay in the TransUNet-lineage trainers (CSWin-UNet's ``trainer.py`` included)::

    for batch in loader:
        ...; optimizer.step()
        lr_ = base_lr * (1.0 - iter_num / max_iterations) ** 0.9   # iter_num not yet incremented
        set lr_ on every param group; iter_num += 1

The LR set after step k−1 is computed from ``iter_num = k − 1``, so steps 0 and 1 both
run at the base LR and step k ≥ 1 runs at ``base · (1 − (k − 1)/T) ** 0.9`` (T = total
iterations); the last step (k = T − 1) runs at ``base · (2/T) ** 0.9``, never at 0.

* ``"poly"`` (default): exactly that sequence.
* ``"poly_shifted"``: ``base · (1 − k/T) ** power`` at step k — one step ahead of the
  release from step 1 on (the plain formula in a ``LambdaLR``; this project's schedule
  before the release's sequence was followed).
* ``"constant"``: the base LR throughout.

Linear warm-up + cosine decay of the Swin codebase (SLAB's classification recipes) is
:func:`warmup_cosine_factor` / :func:`build_warmup_cosine`.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["ScheduleName", "build_schedule", "build_warmup_cosine", "poly_factor", "warmup_cosine_factor"]

ScheduleName = Literal["poly", "poly_shifted", "constant"]


def poly_factor(step: int, total_steps: int, power: float = 0.9, official_lag: bool = True) -> float:
    """LR factor of optimizer step ``step`` (0-based) in a poly decay over ``total_steps`` steps.

    ``official_lag=True`` (the release): 1 at step 0, ``(1 − (step − 1)/T) ** power`` from
    step 1 on. ``official_lag=False``: ``(1 − step/T) ** power``. Clamped at 0 past the end.
    """
    progress = max(step - 1, 0) if official_lag else step
    return max(0.0, 1.0 - progress / total_steps) ** power


def build_schedule(
    optimizer: torch.optim.Optimizer, name: ScheduleName, total_steps: int, power: float = 0.9
) -> LambdaLR:
    """A per-iteration schedule over ``total_steps`` optimizer steps (step it every optimizer step)."""
    if name in ("poly", "poly_shifted"):
        if total_steps < 1:
            raise ValueError(f"{name} schedule needs total_steps >= 1, got {total_steps}")
        official_lag = name == "poly"
        return LambdaLR(optimizer, lambda step: poly_factor(step, total_steps, power, official_lag))
    if name == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown schedule {name!r}; choose poly, poly_shifted or constant")


def report_effective_batch(module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
    """Print (rank 0) the effective batch = per-device batch × processes × accumulation, the LR and the steps."""
    trainer = module._trainer
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None) if trainer is not None else None
    if not batch_size:
        return
    from lightning.pytorch.utilities import rank_zero_info

    effective = batch_size * trainer.world_size * trainer.accumulate_grad_batches
    rank_zero_info(f"effective batch {effective} = {batch_size} per device × {trainer.world_size} "
                   f"process(es) × {trainer.accumulate_grad_batches} accumulated; base LR "
                   f"{optimizer.param_groups[0]['lr']:g}; {total_steps} optimizer steps")


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, warmup_ratio: float, min_ratio: float,
                         lag: bool = True) -> float:
    """LR factor (of the base LR) of optimizer step ``step`` in linear warm-up + cosine decay (timm, Swin codebase).

    timm's ``CosineLRScheduler(t_initial=T − W, warmup_t=W, warmup_lr_init=base·warmup_ratio,
    lr_min=base·min_ratio, warmup_prefix=True, t_in_epochs=False)`` at update ``t``:
    ``w + (1 − w)·t/W`` for ``t < W``, then ``m + ½(1 − m)(1 + cos(π (t − W)/(T − W)))``,
    ``m`` once ``t ≥ T``. ``lag=True``: the Swin training loop sets the LR of update ``t``
    after optimizer step ``t``, so steps 0 and 1 both run at ``t = 0`` and step k ≥ 1 at
    ``t = k − 1`` (as :func:`poly_factor`'s ``official_lag``).
    """
    t = max(step - 1, 0) if lag else step
    if t < warmup_steps:
        return warmup_ratio + (1.0 - warmup_ratio) * t / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0 or t >= total_steps:
        return min_ratio
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * (t - warmup_steps) / decay_steps))


def build_warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, warmup_ratio: float,
                        min_ratio: float, lag: bool = True) -> LambdaLR:
    """A per-step ``LambdaLR`` of :func:`warmup_cosine_factor` (factors of each group's current LR)."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps, warmup_ratio,
                                                                 min_ratio, lag))
