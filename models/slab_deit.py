"""SLAB's DeiT family on timm's ``VisionTransformer``: DeiT-{T,S}-PRepBN and SLAB-DeiT-{T,S}.

Everything is timm's ViT, configured by its constructor: ``norm_layer`` (the SLAB norm,
:mod:`models.slab_norm`), ``block_fn`` (:class:`SLABlock` where attention is SLA),
``class_token`` / ``global_pool`` / ``fc_norm=False`` (final norm on all tokens, then pooling).
Written here, because timm cannot express them:

* :class:`SLABlock`: timm's ``Block`` whose attention is SLA; timm's ``attn_layer`` hook cannot
  carry the token grid SLA's positional term is sized by, so the block swaps it in.
* :class:`SLABVisionTransformer`: SLAB-DeiT has no class token in the forward (patch-only
  positional embedding, average pooling), yet the release keeps an unused ``cls_token``
  parameter that counts; it lives here as ``released_cls_token`` (timm's ViT would use a
  ``cls_token``), converted to the release's name.
"""
from __future__ import annotations

import functools

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from models.layers.linear_attention import SimplifiedLinearAttention
from models.slab_norm import slab_norm_layer
from models.slab_reparam import reparameterize

__all__ = ["SLABlock", "TokenSLA", "SLABVisionTransformer"]


class TokenSLA(SimplifiedLinearAttention):
    """SLA with timm's attention call signature: ``(B, N, C)`` → ``(B, N, C)``, no mask."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                **_) -> torch.Tensor:
        if is_causal:
            raise ValueError("SLA has no causal form")
        return super().forward(x, mask=attn_mask)


class SLABlock(Block):
    """timm's pre-norm ViT ``Block`` with SLA over a ``grid`` of patch tokens (no class token)."""

    def __init__(self, dim: int, num_heads: int, *, grid: tuple[int, int], kernel_size: int = 5,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, **kwargs) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **kwargs)
        self.attn = TokenSLA(dim, num_heads, grid, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                             kernel_size=kernel_size)
        for layer in (self.attn.qkv, self.attn.proj):  # timm's ViT init of the swapped-in Linears
            trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class SLABVisionTransformer(VisionTransformer):
    """timm ``VisionTransformer`` built for SLAB: ``(B, 3, H, W)`` → logits ``(B, num_classes)``.

    ``norm``: ``"ln" | "bn" | "repbn" | "prepbn"`` (``norm_kwargs`` go to the norm, e.g. ``T``);
    ``attention``: ``"softmax"`` (timm's attention) or ``"sla"``; ``pool``: ``"token"`` (class
    token, DeiT) or ``"avg"`` (no class token in the forward, SLAB-DeiT); ``released_cls_token``
    keeps the release's unused class token with ``pool="avg"``.
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, num_classes: int = 1000, norm: str = "repbn", attention: str = "softmax",
                 pool: str = "token", released_cls_token: bool = False, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, kernel_size: int = 5,
                 norm_kwargs: dict | None = None) -> None:
        if attention not in ("softmax", "sla"):
            raise ValueError(f"attention must be 'softmax' or 'sla', got {attention!r}")
        if pool not in ("token", "avg"):
            raise ValueError(f"pool must be 'token' or 'avg', got {pool!r}")
        if attention == "sla" and pool == "token":
            raise ValueError("SLA is sized for the patch grid: use pool='avg' (no class token), as the release")
        grid = (img_size // patch_size, img_size // patch_size)
        block_fn = Block
        if attention == "sla":
            block_fn = functools.partial(SLABlock, grid=grid, kernel_size=kernel_size)
        super().__init__(
            img_size=img_size, patch_size=patch_size, num_classes=num_classes, global_pool=pool,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True,
            class_token=pool == "token", fc_norm=False, pos_drop_rate=drop_rate, proj_drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            norm_layer=slab_norm_layer(norm, **(norm_kwargs or {})), block_fn=block_fn,
        )
        self.norm_kind, self.attention, self.img_size = norm, attention, img_size
        if released_cls_token and pool == "avg":
            # never in the forward, so frozen: the same values as the release's (its optimizer skips a
            # parameter without gradient), and DDP does not stop on a parameter that gets none
            self.released_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim), requires_grad=False)
            trunc_normal_(self.released_cls_token, std=0.02)
        else:
            self.register_parameter("released_cls_token", None)

    def merge(self, release_formula: bool = False) -> nn.Module:
        """An eval-mode copy with every RepBN folded (:func:`models.slab_reparam.reparameterize`)."""
        return reparameterize(self, release_formula)

    def official_key(self, key: str) -> str:
        """Our key → the release's (``released_cls_token`` → ``cls_token``; norms converted by the caller)."""
        return "cls_token" if key == "released_cls_token" else key
