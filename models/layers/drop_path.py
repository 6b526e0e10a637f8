"""Per-block stochastic-depth rates; the DropPath layer itself is ``timm.layers.DropPath``."""
from __future__ import annotations

import torch

__all__ = ["drop_path_schedule"]


def drop_path_schedule(depths: tuple[int, ...] | list[int], max_rate: float) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates over all blocks, split per stage.

    The release's ``torch.linspace(0, drop_path_rate, sum(depths))``, which timm has no helper for.
    ``drop_path_schedule((1, 2), 0.2) == [[0.0], [0.1, 0.2]]``.
    """
    total = sum(depths)
    rates = torch.linspace(0, max_rate, total).tolist() if total > 0 else []
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out
