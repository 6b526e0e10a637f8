"""SLAB's norm choices as a timm-style ``norm_layer`` (``norm_layer(dim, device=..., dtype=...)``).

``slab_norm_layer(kind, ...)`` returns a ``functools.partial`` of :func:`make_slab_norm` that timm's
``VisionTransformer`` / ``SwinTransformer`` (and the SLAB-CSWin here) call for every norm:

* ``"ln"``: ``nn.LayerNorm``;
* ``"bn"``: :class:`TokenBatchNorm`, BatchNorm1d over channels with statistics over batch × tokens;
* ``"repbn"``: :class:`SlabRepBN` (RepBN, ``BN(x) + α·x``, no progression);
* ``"prepbn"``: :class:`SlabProgressiveNorm` (the release's ``LinearNorm``: γ·LN + (1 − γ)·RepBN).

All take tokens ``(B, N, C)`` or channels-last maps ``(B, H, W, C)`` (timm's Swin norms see both).
The subclasses only add a ``weight`` property (timm's Swin block reads ``norm1.weight`` for the
device/dtype of its attention mask); state-dict keys are those of RepBN / ProgressiveNorm.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from models.layers.repbn import ProgressiveNorm, RepBN

__all__ = ["NORMS", "TokenBatchNorm", "SlabRepBN", "SlabProgressiveNorm", "make_slab_norm", "slab_norm_layer"]

NORMS = ("ln", "bn", "repbn", "prepbn")


class TokenBatchNorm(nn.BatchNorm1d):
    """Plain BN on ``(B, N, C)`` / ``(B, H, W, C)`` (statistics over every token of the batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return super().forward(x)
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        return super().forward(tokens.transpose(1, 2)).transpose(1, 2).reshape(x.shape)


class SlabRepBN(RepBN):
    """:class:`RepBN` with a ``weight`` property (its BN's weight) for timm's device/dtype probes."""

    @property
    def weight(self) -> torch.Tensor:
        return self.bn.weight


class SlabProgressiveNorm(ProgressiveNorm):
    """:class:`ProgressiveNorm` with a ``weight`` property (its RepBN's BN weight) for timm's probes."""

    @property
    def weight(self) -> torch.Tensor:
        return self.repbn.bn.weight


def make_slab_norm(dim: int, kind: str = "repbn", *, T: int = 300_000, schedule: str = "linear",
                   counting: str = "global_step", warmup: int = 0, eval_mixture: bool = False,
                   ln_eps: float = 1e-5, device=None, dtype=None) -> nn.Module:
    """One norm of ``kind`` over ``dim`` channels (``T``… only for ``"prepbn"``, ``ln_eps`` for its/the LN)."""
    if kind == "ln":
        norm = nn.LayerNorm(dim, eps=ln_eps)
    elif kind == "bn":
        norm = TokenBatchNorm(dim)
    elif kind == "repbn":
        norm = SlabRepBN(dim)
    elif kind == "prepbn":
        norm = SlabProgressiveNorm(dim, T=T, warmup=warmup, schedule=schedule, counting=counting,
                                   eval_mixture=eval_mixture, ln_eps=ln_eps)
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    if device is not None or dtype is not None:
        norm = norm.to(device=device, dtype=dtype)
    return norm


def slab_norm_layer(kind: str = "repbn", **kwargs) -> functools.partial:
    """A timm ``norm_layer`` building :func:`make_slab_norm` ``(dim, kind, **kwargs)``."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    return functools.partial(make_slab_norm, kind=kind, **kwargs)
