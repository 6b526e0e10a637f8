"""Weight initialisation shared by the transformer models here."""
from __future__ import annotations

from timm.layers import trunc_normal_
from torch import nn

__all__ = ["init_linear_and_layernorm"]


def init_linear_and_layernorm(module: nn.Module) -> None:
    """ViT-family init (``model.apply(...)``): Linear ~ trunc-normal(0.02), bias 0; LayerNorm 1/0; others untouched.

    timm's ``trunc_normal_`` (inverse-CDF sampling, as the CSWin release); the installed torch's
    ``nn.init.trunc_normal_`` is a rejection sampler: same distribution, different random stream.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
