"""The taming-transformers / LDM VQGAN building blocks, as GLARE's release uses them.

GLARE (``code/models/modules/encoder_decoder.py``) builds its VQGAN, its conditional
encoder and its Stage-III decoder from the LDM "pytorch_diffusion-derived" encoder and
decoder. Written here once, with the release's attribute names so that checkpoints load
by name:

* :func:`Normalize`: ``GroupNorm(32, C, eps=1e-6)``; :func:`swish` = ``x·sigmoid(x)`` (= SiLU).
* :class:`ResnetBlock`: norm → swish → conv3×3 → norm → swish → dropout → conv3×3, plus a
  1×1 ``nin_shortcut`` (or 3×3 ``conv_shortcut``) when the width changes. The release's
  timestep-embedding branch is never built in GLARE (``temb_ch = 0``) and is omitted.
* :class:`AttnBlock`: single-head spatial self-attention over the H·W positions with 1×1
  q/k/v/proj convolutions, through ``F.scaled_dot_product_attention`` (the same softmax(q kᵀ/√C) v).
* :class:`Upsample` (nearest ×2 then conv3×3) and :class:`Downsample` (zero pad right/bottom by
  one, conv3×3 stride 2; avg-pool without conv).
* :class:`VQGANEncoder` and :class:`VQGANDecoder`: the two halves of the autoencoder. As in
  GLARE's release, the encoder can also return its features before each downsampling and the
  decoder returns its features after each level's blocks except the lowest.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Normalize",
    "swish",
    "ResnetBlock",
    "AttnBlock",
    "Upsample",
    "Downsample",
    "VQGANEncoder",
    "VQGANDecoder",
]


def Normalize(in_channels: int) -> nn.GroupNorm:  # noqa: N802  (the release's name)
    """GroupNorm with 32 groups, eps 1e-6, affine (``in_channels`` must be a multiple of 32)."""
    return nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x · sigmoid(x)`` (PyTorch's SiLU)."""
    return F.silu(x)


class ResnetBlock(nn.Module):
    """Pre-activation residual block. ``x: (B, C_in, H, W) → (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 conv_shortcut: bool = False) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over positions, residual. ``x: (B, C, H, W) → (B, C, H, W)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, 1, HW, C): one head; SDPA scales by C^-1/2 as the release does
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then (optionally) conv3×3. ``(B, C, H, W) → (B, C, 2H, 2W)``."""

    def __init__(self, in_channels: int, with_conv: bool = True) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """Zero-pad (right, bottom) by 1 then conv3×3 stride 2, or avg-pool 2. ``(B, C, H, W) → (B, C, H/2, W/2)``."""

    def __init__(self, in_channels: int, with_conv: bool = True) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


def _level(blocks: nn.ModuleList, attn: nn.ModuleList) -> nn.Module:
    level = nn.Module()
    level.block = blocks
    level.attn = attn
    return level


class VQGANEncoder(nn.Module):
    """Image → latent: conv_in, levels of ResnetBlocks (+ attention), mid block, norm → swish → conv_out.

    ``x: (B, in_channels, H, W) → (B, z, H/f, W/f)`` with ``f = 2^(len(ch_mult) - 1)`` and
    ``z = 2·z_channels`` if ``double_z`` else ``z_channels``. Attention follows every block of the
    levels whose nominal resolution (``resolution / 2^level``) is in ``attn_resolutions``.
    With ``return_features=True`` also returns the features before each downsampling, finest
    first (GLARE's ``mid_feat``: ``[(B, ch·m0, H, W), (B, ch·m1, H/2, W/2), ...]``).
    """

    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, resamp_with_conv: bool = True,
                 in_channels: int = 3, resolution: int = 256, z_channels: int = 3, double_z: bool = False) -> None:
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_ch_mult = (1, *ch_mult)
        curr_res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            blocks, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = _level(blocks, attn)
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = self.conv_in(x)
        features = []
        for i_level, down in enumerate(self.down):
            for i_block, block in enumerate(down.block):
                h = block(h)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                features.append(h)
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        h = self.conv_out(swish(self.norm_out(h)))
        return (h, features) if return_features else h


def build_decoder_trunk(module: nn.Module, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                        attn_resolutions: Sequence[int], dropout: float, resamp_with_conv: bool, resolution: int,
                        z_channels: int) -> int:
    """Give ``module`` the VQGAN decoder's trunk under the release's names; returns the output width.

    ``conv_in`` (z → ch·m[-1]), ``mid`` (block_1, attn_1, block_2), ``up`` (``up[0]`` the finest
    level: ``num_res_blocks + 1`` ResnetBlocks, attention at ``attn_resolutions``, ``upsample``
    except at level 0) and ``norm_out``, built in that order (the release's init order).
    Shared by :class:`VQGANDecoder` and GLARE's multi-scale decoder.
    """
    num_resolutions = len(ch_mult)
    block_in = ch * ch_mult[-1]
    curr_res = resolution // 2 ** (num_resolutions - 1)
    module.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
    module.mid = nn.Module()
    module.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
    module.mid.attn_1 = AttnBlock(block_in)
    module.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
    levels = []
    for i_level in reversed(range(num_resolutions)):
        blocks, attn = nn.ModuleList(), nn.ModuleList()
        block_out = ch * ch_mult[i_level]
        for _ in range(num_res_blocks + 1):
            blocks.append(ResnetBlock(block_in, block_out, dropout))
            block_in = block_out
            if curr_res in attn_resolutions:
                attn.append(AttnBlock(block_in))
        up = _level(blocks, attn)
        if i_level != 0:
            up.upsample = Upsample(block_in, resamp_with_conv)
            curr_res *= 2
        levels.insert(0, up)
    module.up = nn.ModuleList(levels)
    module.norm_out = Normalize(block_in)
    return block_in


class VQGANDecoder(nn.Module):
    """Latent → image: conv_in, mid block, levels of ``num_res_blocks + 1`` ResnetBlocks (+ attention) and
    upsampling, norm → swish → conv_out.

    ``z: (B, z_channels, h, w) → (B, out_ch, h·f, w·f)``. Returns ``(image, features)`` where
    ``features`` are the outputs of each level's blocks except the lowest, coarsest first (GLARE's
    ``code_decoder_output``: ``[(B, ch·m1, 2h, 2w), (B, ch·m0, 4h, 4w)]`` for three levels).
    ``give_pre_end=True`` returns the last features before norm_out instead.
    """

    def __init__(self, ch: int = 128, out_ch: int = 3, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, resamp_with_conv: bool = True,
                 resolution: int = 256, z_channels: int = 3, give_pre_end: bool = False) -> None:
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.give_pre_end = give_pre_end
        block_in = build_decoder_trunk(self, ch, ch_mult, num_res_blocks, attn_resolutions, dropout,
                                       resamp_with_conv, resolution, z_channels)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def run_level(self, i_level: int, h: torch.Tensor) -> torch.Tensor:
        """The blocks (and attention) of level ``i_level``, without its upsampling."""
        up = self.up[i_level]
        for i_block, block in enumerate(up.block):
            h = block(h)
            if len(up.attn) > 0:
                h = up.attn[i_block](h)
        return h

    def forward(self, z: torch.Tensor):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        features = []
        for i_level in reversed(range(self.num_resolutions)):
            h = self.run_level(i_level, h)
            if i_level != self.num_resolutions - 1:
                features.append(h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        if self.give_pre_end:
            return h
        return self.conv_out(swish(self.norm_out(h))), features
