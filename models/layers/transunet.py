"""TransUNet's hybrid CNN encoder and CUP decoder (Chen et al., arXiv 2102.04306), the R50-ViT-B/16 host.

Written from the published architecture (TransUNet's ``ResNetV2`` with skip features
and its cascaded-upsampler decoder); no upstream code is used. timm's ResNetV2 is the
network; hand-written are only the skip-feature forward and the CUP decoder (timm has
neither: its feature extraction has no TransUNet padding, and it has no segmentation decoder).

* :class:`ResNetV2SkipEncoder`: timm's non-pre-activation ``ResNetV2`` with stages
  (3, 4, 9) (the BiT-style R50 of R50-ViT-B/16: weight-standardised convs, GroupNorm
  32, ReLU), run so that it returns TransUNet's skip features. Two details of
  TransUNet's port, which timm does not have, are set on the timm modules:
  the stem max-pool has **no padding** (2n → n − 1, e.g. 128 → 63) and the 1/4 feature
  is zero-padded at the bottom/right back to H/4 for its skip (the body goes on with
  the unpadded map); the projection shortcut is normalised by ``GroupNorm(C, C)``
  (one group per channel, eps 1e-5), not GroupNorm(32). Weight-standardisation eps
  1e-5, GroupNorm eps 1e-6 as in TransUNet.
* :class:`CUPDecoder`: 3×3 conv + BN + ReLU (``conv_more``), then per level bilinear
  ×2 (align_corners=True), concat ``[x, skip]``, two 3×3 conv + BN + ReLU; the 3×3
  segmentation head (with bias). Skips are used from the coarsest (1/8) down.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2
from torch import nn

from models.layers.convformer import ConvBNReLU

__all__ = ["ResNetV2SkipEncoder", "CUPDecoder", "DecoderBlock"]


class ResNetV2SkipEncoder(nn.Module):
    """R50 hybrid encoder: (B, in_chans, H, W) → (B, C₃, H/16, W/16) and skips [1/8, 1/4, 1/2].

    Skip channels: ``(channels[1], channels[0], stem_channels)`` = (512, 256, 64) for R50;
    output channels ``channels[2]`` (1024). H, W must be multiples of 16.
    """

    def __init__(self, in_chans: int = 3, layers: Sequence[int] = (3, 4, 9),
                 channels: Sequence[int] = (256, 512, 1024), stem_channels: int = 64) -> None:
        super().__init__()
        if len(layers) != 3 or len(channels) != 3:
            raise ValueError(f"the R50 hybrid has 3 stages, got layers={tuple(layers)}, channels={tuple(channels)}")
        self.body = ResNetV2(
            layers=list(layers), channels=tuple(channels), num_classes=0, in_chans=in_chans, global_pool="",
            stem_chs=stem_channels, preact=False, stem_type="",
            conv_layer=partial(StdConv2d, eps=1e-5), norm_layer=partial(GroupNormAct, num_groups=32, eps=1e-6),
        )
        self.body.stem.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
        for stage, out_chs in zip(self.body.stages, channels, strict=True):
            stage.blocks[0].downsample.norm = GroupNormAct(out_chs, num_groups=out_chs, eps=1e-5, apply_act=False)
        self.out_channels = channels[2]
        self.skip_channels = (channels[1], channels[0], stem_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"the R50 hybrid needs H and W divisible by 16, got {(h, w)}")
        stem = self.body.stem
        x = stem.norm(stem.conv(x))
        skips = [x]  # 1/2
        x = stem.pool(x)  # (H/2 − 1) with TransUNet's unpadded pool
        for i, stage in enumerate(self.body.stages):
            x = stage(x)
            if i < 2:  # skips at 1/4 and 1/8, zero-padded bottom/right to the exact size
                th, tw = h // (4 * 2**i), w // (4 * 2**i)
                skips.append(F.pad(x, (0, tw - x.shape[-1], 0, th - x.shape[-2])))
        return x, skips[::-1]


class DecoderBlock(nn.Module):
    """Bilinear ×2 → concat [x, skip] → 2 × (3×3 conv + BN + ReLU): (B, C_in, h, w) → (B, C_out, 2h, 2w)."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class CUPDecoder(nn.Module):
    """TransUNet's cascaded upsampler: (B, hidden, H/16, W/16) + skips → logits (B, num_classes, H, W).

    ``skip_channels`` lists the skip widths coarsest first (1/8, 1/4, 1/2); the first
    ``num_skips`` are used (TransUNet's ``n_skip``, 3 for R50).
    """

    def __init__(self, hidden_size: int, num_classes: int, skip_channels: Sequence[int] = (512, 256, 64),
                 head_channels: int = 512, decoder_channels: Sequence[int] = (256, 128, 64, 16),
                 num_skips: int = 3) -> None:
        super().__init__()
        if len(decoder_channels) != 4 or not 0 <= num_skips <= len(skip_channels) <= 3:
            raise ValueError(f"need 4 decoder levels and 0 <= num_skips <= {len(skip_channels)} <= 3")
        self.num_skips = num_skips
        skips = [c if i < num_skips else 0 for i, c in enumerate(skip_channels)]
        skips += [0] * (4 - len(skips))
        ins = [head_channels, *decoder_channels[:-1]]
        self.conv_more = ConvBNReLU(hidden_size, head_channels)
        self.blocks = nn.ModuleList(
            DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.conv_more(x)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < self.num_skips else None)
        return self.head(x)
