"""SLAB-CSWin on the project's CSWin layers (:mod:`models.layers.cswin_attention`).

CSWin-T layout (the release's ``SLAB_CSWin_64_24181_tiny_224``): conv 7×7/4 stem + norm → 4
stages of CSWin blocks (dims 64-128-256-512, depths 2-4-18-1, heads 2-4-8-16, stripe widths
1-2-7-7) joined by conv 3×3/2 merges + norm → final norm → token mean → Linear head. Every
norm is the SLAB norm (PRepBN, T = 120,000, LN eps 1e-5). Attention pattern ``"LLSS"``:

* ``S`` stages: the project's :class:`CrossShapedWindowAttention` (softmax in stripes + LePE;
  one full branch where the stage's map equals the stripe width, the release's rule);
* ``L`` stages (the release's ``la_split_size`` 56-28 = the whole map, so one branch):
  :class:`CSWinLinearAttention`, written here — SLA on the whole map (ReLU kernel, K + P with a
  zero-initialised P, fp32 kernel, + depthwise 5×5 conv on V per head, shared by heads) plus
  LePE (depthwise 3×3 on V, all channels), the FLatten-CSWin branch with its focusing function
  replaced by ReLU. Only names, shapes and counts of this branch are pinned by the fixtures
  (no output fixture); the release's ``scale`` (FLatten's focusing scale) is a counted, unused
  parameter (``released_scale=False`` drops it).

:class:`SLABCSWinBlock` subclasses the project's :class:`CSWinBlock` to swap its norms (and, in
``L`` stages, its attention); the official names (``qkv``/``proj``/``attns.{i}.get_v`` on the
block, ``stage{s}``, ``merge{s}``, ``stage1_conv_embed.{0,2}``) come from :meth:`SLABCSWin.official_key`.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import CSWinBlock, drop_path_schedule
from models.layers.init import init_linear_and_layernorm
from models.layers.linear_attention import sla_kernel
from models.slab_norm import slab_norm_layer
from models.slab_reparam import reparameterize
from models.slab_swin import resolve_pattern

__all__ = ["CSWinLinearBranch", "CSWinLinearAttention", "SLABCSWinBlock", "ConvEmbed", "SLABCSWin"]


class CSWinLinearBranch(nn.Module):
    """SLA + DWC + LePE over a whole ``(H, W)`` map: q, k, v ``(B, H, W, C)`` → ``(B, H, W, C)``."""

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], kernel_size: int = 5,
                 released_scale: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim, self.eps = dim, num_heads, dim // num_heads, eps
        self.resolution = tuple(resolution)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, resolution[0] * resolution[1], dim))
        if released_scale:
            self.scale = nn.Parameter(torch.zeros(1, 1, dim))  # the release's; unused in its forward
        else:
            self.register_parameter("scale", None)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        if (h, w) != self.resolution:
            raise ValueError(f"CSWinLinearBranch is sized for {self.resolution}, got a {h}×{w} map")
        n, heads, d = h * w, self.num_heads, self.head_dim
        q, k, v = q.reshape(b, n, c), k.reshape(b, n, c) + self.positional_encoding, v.reshape(b, n, c)
        q, k = F.relu(q), F.relu(k)
        split = lambda t: t.reshape(b, n, heads, d).transpose(1, 2).reshape(b * heads, n, d)  # noqa: E731
        vh = split(v)
        with torch.autocast(device_type=q.device.type, enabled=False):
            out = sla_kernel(split(q).float(), split(k).float(), vh.float(), self.eps).to(v.dtype)
        out = out + self.dwc(vh.transpose(1, 2).reshape(b * heads, d, h, w)).flatten(2).transpose(1, 2)
        out = out.reshape(b, heads, n, d).transpose(1, 2).reshape(b, h, w, c)
        return out + self.lepe(v.transpose(1, 2).reshape(b, c, h, w)).permute(0, 2, 3, 1)


class CSWinLinearAttention(nn.Module):
    """qkv → one :class:`CSWinLinearBranch` over the map → proj: ``(B, H, W, C)`` → ``(B, H, W, C)``.

    Same key layout as :class:`CrossShapedWindowAttention` (``qkv``, ``branches.0``, ``proj``).
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], qkv_bias: bool = True,
                 proj_drop: float = 0.0, kernel_size: int = 5, released_scale: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.branches = nn.ModuleList([CSWinLinearBranch(dim, num_heads, resolution, kernel_size, released_scale)])
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj_drop(self.proj(self.branches[0](q, k, v)))


class SLABCSWinBlock(CSWinBlock):
    """The project's CSWin block with ``norm_layer`` norms and, for ``attention="L"``, SLA on the map.

    x: ``(B, H, W, C)`` → ``(B, H, W, C)``; ``resolution``: the stage's map (fixed, as the release).
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, resolution: tuple[int, int], *,
                 norm_layer, attention: str = "S", mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, kernel_size: int = 5,
                 released_scale: bool = True) -> None:
        full = attention == "L" or tuple(resolution) == (split_size, split_size)
        super().__init__(dim, num_heads, split_size, mlp_ratio, qkv_bias, None, drop, attn_drop, drop_path,
                         full_attention=full)
        self.norm1, self.norm2 = norm_layer(dim), norm_layer(dim)
        if attention == "L":
            self.attn = CSWinLinearAttention(dim, num_heads, resolution, qkv_bias, drop, kernel_size, released_scale)


class ConvEmbed(nn.Module):
    """Conv then norm, channels-last out: ``(B, C_in, H, W)`` or ``(B, H, W, C_in)`` → ``(B, H', W', C)``."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int, stride: int, padding: int, norm_layer,
                 channels_last_in: bool) -> None:
        super().__init__()
        self.channels_last_in = channels_last_in
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size, stride, padding)
        self.norm = norm_layer(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_in:
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class SLABCSWin(nn.Module):
    """SLAB-CSWin classifier: ``(B, 3, H, W)`` → logits ``(B, num_classes)``.

    ``norm``: ``"ln" | "bn" | "repbn" | "prepbn"`` (``norm_kwargs`` to the norm, e.g. ``T``);
    ``attention``: ``"sla"`` (``"LLSS"``), ``"softmax"`` (``"SSSS"``: plain CSWin) or 4 letters.
    """

    def __init__(self, *, img_size: int = 224, embed_dim: int = 64, depths: tuple[int, ...] = (2, 4, 18, 1),
                 split_sizes: tuple[int, ...] = (1, 2, 7, 7), num_heads: tuple[int, ...] = (2, 4, 8, 16),
                 num_classes: int = 1000, norm: str = "prepbn", attention: str = "sla", mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 kernel_size: int = 5, released_scale: bool = True, norm_kwargs: dict | None = None) -> None:
        super().__init__()
        pattern = resolve_pattern(attention, "LLSS", len(depths))
        norm_layer = slab_norm_layer(norm, **(norm_kwargs or {}))
        self.num_classes, self.img_size, self.norm_kind, self.attention_pattern = num_classes, img_size, norm, pattern
        self.stem = ConvEmbed(3, embed_dim, 7, 4, 2, norm_layer, channels_last_in=False)
        with torch.device("cpu"):  # plain floats, also when built under a meta-device context
            rates = drop_path_schedule(depths, drop_path_rate)
        dims = [embed_dim * 2**s for s in range(len(depths))]
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        for s, depth in enumerate(depths):
            side = img_size // 4 // 2**s
            self.stages.append(nn.ModuleList([
                SLABCSWinBlock(dims[s], num_heads[s], split_sizes[s], (side, side), norm_layer=norm_layer,
                               attention=pattern[s], mlp_ratio=mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate,
                               drop_path=rates[s][i], kernel_size=kernel_size, released_scale=released_scale)
                for i in range(depth)]))
            if s + 1 < len(depths):
                self.merges.append(ConvEmbed(dims[s], dims[s + 1], 3, 2, 1, norm_layer, channels_last_in=True))
        self.num_features = dims[-1]
        self.norm = norm_layer(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear_and_layernorm)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → normalised last-stage map ``(B, H/32, W/32, C)``."""
        x = self.stem(x)
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.merges[s - 1](x)
            for block in stage:
                x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).flatten(1, 2).mean(dim=1))

    def merge(self, release_formula: bool = False) -> nn.Module:
        """An eval-mode copy with every RepBN folded (:func:`models.slab_reparam.reparameterize`)."""
        return reparameterize(self, release_formula)

    def official_key(self, key: str) -> str:
        """Our key → the release's (norm internals by the caller)."""
        for ours, theirs in (("stem.conv.", "stage1_conv_embed.0."), ("stem.norm.", "stage1_conv_embed.2.")):
            if key.startswith(ours):
                return theirs + key[len(ours):]
        if m := re.match(r"merges\.(\d+)\.(.*)", key):
            return f"merge{int(m[1]) + 1}.{m[2]}"
        if m := re.match(r"stages\.(\d+)\.(\d+)\.(.*)", key):
            rest = re.sub(r"^attn\.(qkv|proj)\.", r"\1.", m[3])
            rest = re.sub(r"^attn\.branches\.(\d+)\.lepe\.", r"attns.\1.get_v.", rest)
            rest = re.sub(r"^attn\.branches\.(\d+)\.", r"attns.\1.", rest)
            return f"stage{int(m[1]) + 1}.{m[2]}.{rest}"
        return key


