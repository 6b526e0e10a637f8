"""Learned and fixed upsamplers compared by CSWin-UNet's Table 5, behind one factory.

Every upsampler maps (B, C_in, H, W) → (B, C_out, σH, σW).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from models.layers.carafe import CARAFE

__all__ = ["BilinearUpsample", "TransposedConvUpsample", "build_upsampler", "UpsamplerName"]

UpsamplerName = Literal["carafe", "bilinear", "transposed"]


class BilinearUpsample(nn.Module):
    """Bilinear interpolation ×σ (align_corners=False), then a 1×1 projection C_in → C_out."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)
        self.projection = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.upsample(x))


class TransposedConvUpsample(nn.Module):
    """ConvTranspose2d with kernel = stride = σ, C_in → C_out."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)


def build_upsampler(
    name: UpsamplerName,
    in_channels: int,
    out_channels: int,
    scale: int,
    *,
    carafe_up_kernel: int = 3,
    carafe_encoder_kernel: int = 3,
    carafe_compression: int = 4,
) -> nn.Module:
    """Build ``"carafe"`` (compressor C/``carafe_compression``), ``"bilinear"`` or ``"transposed"``."""
    if name == "carafe":
        return CARAFE(
            in_channels,
            out_channels,
            scale,
            up_kernel=carafe_up_kernel,
            encoder_kernel=carafe_encoder_kernel,
            compressed_channels=max(in_channels // carafe_compression, 1),
        )
    if name == "bilinear":
        return BilinearUpsample(in_channels, out_channels, scale)
    if name == "transposed":
        return TransposedConvUpsample(in_channels, out_channels, scale)
    raise ValueError(f"unknown upsampler {name!r}; choose carafe, bilinear or transposed")
