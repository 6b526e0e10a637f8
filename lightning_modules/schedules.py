"""Learning-rate schedules stepped every optimizer step (``interval: step``)."""
from __future__ import annotations

from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

ScheduleName = Literal["poly", "constant"]


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """TransUNet-lineage poly decay: ``(1 − step / total_steps) ** power``, clamped at 0.

    The release updates the LR after every iteration with ``iter_num`` already
    incremented, so step 0 uses the base LR and step ``total_steps`` reaches 0.
    """
    return max(0.0, 1.0 - step / total_steps) ** power


def build_schedule(
    optimizer: torch.optim.Optimizer, name: ScheduleName, total_steps: int, power: float = 0.9
) -> LambdaLR:
    """A per-iteration schedule over ``total_steps`` optimizer steps."""
    if name == "poly":
        if total_steps < 1:
            raise ValueError(f"poly schedule needs total_steps >= 1, got {total_steps}")
        return LambdaLR(optimizer, lambda step: poly_factor(step, total_steps, power))
    if name == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown schedule {name!r}; choose poly or constant")
