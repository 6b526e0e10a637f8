"""SLAB's Swin family on timm's ``SwinTransformer``: Swin-T-PRepBN and SLAB-Swin-{T,S}.

timm's Swin, configured by its constructor: ``norm_layer`` (the SLAB norm, every norm of the
network: patch embedding, blocks, patch merging, final), per-stage ``window_size`` (timm clips
a window to its stage's map and then does not shift, so the release's 56 is global attention).
Written here, because timm cannot express it:

* :class:`SLABSwinTransformer`: the stage attention pattern (``"LLSS"``: SLA in stages 1–2 with
  windows of ``la_window_size`` = 56, i.e. global and unshifted; softmax window attention with
  relative position bias, window ``window_size`` = 7 and the usual shift, in stages 3–4) — timm's
  Swin has no attention hook, so the SLA stages' ``attn`` is swapped after construction.

Layout differences to the release, handled by :meth:`SLABSwinTransformer.official_key`: timm
puts patch merging at the start of stage i + 1 (``layers.{i+1}.downsample``; the release at the
end of stage i), the classifier is ``head.fc``; ``relative_position_index`` / ``attn_mask`` are
non-persistent in timm (the release saves them; the converter drops them).
"""
from __future__ import annotations

from timm.layers import trunc_normal_
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from models.layers.linear_attention import SimplifiedLinearAttention
from models.slab_norm import slab_norm_layer
from models.slab_reparam import reparameterize

__all__ = ["SLABSwinTransformer", "resolve_pattern"]


def resolve_pattern(attention: str, default: str, stages: int) -> str:
    """``"sla"`` → the release's pattern ``default``, ``"softmax"`` → all ``S``, else a ``L``/``S`` string."""
    pattern = {"sla": default, "softmax": "S" * stages}.get(attention, attention)
    if len(pattern) != stages or set(pattern) - {"L", "S"}:
        raise ValueError(f"attention must be 'sla', 'softmax' or {stages} letters of L/S, got {attention!r}")
    return pattern


class SLABSwinTransformer(SwinTransformer):
    """timm ``SwinTransformer`` with SLAB norms and SLA stages: ``(B, 3, H, W)`` → ``(B, num_classes)``.

    ``norm``: ``"ln" | "bn" | "repbn" | "prepbn"`` (``norm_kwargs`` go to the norm, e.g. ``T``);
    ``attention``: ``"sla"`` (the release's ``"LLSS"``), ``"softmax"`` (``"SSSS"``: plain Swin) or a
    4-letter pattern. SLA stages need unshifted windows (``la_window_size`` ≥ the stage's map).
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 4, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 6, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, la_window_size: int = 56, num_classes: int = 1000, norm: str = "repbn",
                 attention: str = "softmax", drop_path_rate: float = 0.1, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, kernel_size: int = 5, norm_kwargs: dict | None = None) -> None:
        pattern = resolve_pattern(attention, "LLSS", len(depths))
        super().__init__(
            img_size=img_size, patch_size=patch_size, num_classes=num_classes, embed_dim=embed_dim,
            depths=tuple(depths), num_heads=tuple(num_heads),
            window_size=tuple(la_window_size if p == "L" else window_size for p in pattern),
            mlp_ratio=4.0, qkv_bias=True, proj_drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, norm_layer=slab_norm_layer(norm, **(norm_kwargs or {})),
        )
        self.norm_kind, self.attention_pattern, self.img_size = norm, pattern, img_size
        for stage, kind in zip(self.layers, pattern, strict=True):
            if kind != "L":
                continue
            for block in stage.blocks:
                if any(block.shift_size):
                    raise ValueError(f"SLA needs unshifted windows: la_window_size {la_window_size} is smaller "
                                     f"than the stage's {block.input_resolution} map")
                block.attn = SimplifiedLinearAttention(
                    block.attn.qkv.in_features, block.attn.num_heads, block.window_size, qkv_bias=True,
                    attn_drop=attn_drop_rate, proj_drop=drop_rate, kernel_size=kernel_size)
                for layer in (block.attn.qkv, block.attn.proj):  # Swin's init of the swapped-in Linears
                    trunc_normal_(layer.weight, std=0.02)
                    nn.init.zeros_(layer.bias)

    def merge(self, release_formula: bool = False) -> nn.Module:
        """An eval-mode copy with every RepBN folded (:func:`models.slab_reparam.reparameterize`)."""
        return reparameterize(self, release_formula)

    def official_key(self, key: str) -> str:
        """Our key → the release's (merging one stage earlier, ``head.fc`` → ``head``; norms by the caller)."""
        if key.startswith("layers.") and ".downsample." in key:
            stage, rest = key[len("layers."):].split(".", 1)
            return f"layers.{int(stage) - 1}.{rest}"
        if key.startswith("head.fc."):
            return "head." + key[len("head.fc."):]
        return key
