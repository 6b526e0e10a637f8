"""Whole-network re-parameterisation of SLAB models (spec §2.6): every RepBN folded away.

:func:`reparameterize` returns an eval-mode copy in which each foldable norm (RepBN, the RepBN
eval path of a progressive norm, plain BN) is merged into its neighbour with
:mod:`models.layers.reparam` and replaced by ``nn.Identity``, in the release's order:

1. blocks: ``norm1 → attn.qkv`` and ``norm2 → mlp.fc1`` (timm ViT / Swin blocks, CSWin blocks);
2. patch merging: ``norm → reduction`` (the reduction gains a bias);
3. patch embedding / conv stems and merges: ``conv → norm`` (corrected bias ``a·c + b``;
   ``release_formula=True`` reproduces the release's bias without ``α·c``);
4. the final norm into the classifier (``norm → pool → head``: the pool commutes with the
   per-channel affine map). The release instead folds it into the last stage's residual
   stream; both are exact, the head fold is simpler and keeps the stage weights intact.

LayerNorms (``norm="ln"``) are not foldable and stay. Exact up to float rounding, except where
a Swin window pads its map (padding zeros after the norm is not an affine map of the input):
never at the released sizes (224², windows 7 / global).
"""
from __future__ import annotations

import copy

from timm.layers import PatchEmbed
from torch import nn

from models.layers.reparam import fold_repbn_into_conv, fold_repbn_into_linear
from models.layers.repbn import ProgressiveNorm, RepBN

__all__ = ["reparameterize", "foldable"]


def foldable(norm: nn.Module) -> bool:
    """Whether ``norm`` is an affine map in eval mode that :mod:`models.layers.reparam` folds."""
    return isinstance(norm, RepBN | ProgressiveNorm | nn.BatchNorm1d)


def _fold_pre(owner: nn.Module, norm_name: str, layer_owner: nn.Module, layer_name: str) -> None:
    norm = getattr(owner, norm_name)
    if foldable(norm):
        setattr(layer_owner, layer_name, fold_repbn_into_linear(norm, getattr(layer_owner, layer_name)))
        setattr(owner, norm_name, nn.Identity())


def _fold_post(owner: nn.Module, conv_name: str, release_formula: bool) -> None:
    if foldable(owner.norm) and isinstance(getattr(owner, conv_name), nn.Conv2d):
        setattr(owner, conv_name, fold_repbn_into_conv(getattr(owner, conv_name), owner.norm, release_formula))
        owner.norm = nn.Identity()


def _is_block(m: nn.Module) -> bool:
    return (all(hasattr(m, a) for a in ("norm1", "attn", "norm2", "mlp"))
            and isinstance(getattr(m.attn, "qkv", None), nn.Linear)
            and isinstance(getattr(m.mlp, "fc1", None), nn.Linear))


def reparameterize(model: nn.Module, release_formula: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with its RepBNs folded (``model`` itself is not changed)."""
    merged = copy.deepcopy(model).eval()
    modules = list(merged.modules())
    for m in modules:  # 1. blocks
        if _is_block(m):
            _fold_pre(m, "norm1", m.attn, "qkv")
            _fold_pre(m, "norm2", m.mlp, "fc1")
    for m in modules:  # 2. patch merging (timm's PatchMerging: norm → reduction)
        if isinstance(getattr(m, "reduction", None), nn.Linear) and hasattr(m, "norm"):
            _fold_pre(m, "norm", m, "reduction")
    for m in modules:  # 3. conv → norm (timm's PatchEmbed, the CSWin stem and merges)
        if isinstance(m, PatchEmbed):
            _fold_post(m, "proj", release_formula)
        elif isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "norm"):
            _fold_post(m, "conv", release_formula)
    head = getattr(merged, "head", None)  # 4. final norm → (pool) → classifier
    head_linear = head if isinstance(head, nn.Linear) else getattr(head, "fc", None)
    if isinstance(head_linear, nn.Linear) and foldable(getattr(merged, "norm", None)):
        folded = fold_repbn_into_linear(merged.norm, head_linear)
        if head_linear is head:
            merged.head = folded
        else:
            head.fc = folded
        merged.norm = nn.Identity()
    return merged
