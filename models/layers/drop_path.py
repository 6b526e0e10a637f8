"""Stochastic depth (per-sample residual-branch dropping)."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``drop_prob``.

    x: (B, ...) — survivors are rescaled by 1 / (1 - drop_prob) so the expectation is unchanged.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; identity in eval mode or at rate 0."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}"


def drop_path_schedule(depths: tuple[int, ...] | list[int], max_rate: float) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates over all blocks, split per stage.

    ``drop_path_schedule((1, 2), 0.2) == [[0.0], [0.1, 0.2]]``.
    """
    total = sum(depths)
    rates = torch.linspace(0, max_rate, total).tolist() if total > 0 else []
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out
