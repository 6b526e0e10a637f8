"""CARAFE: content-aware reassembly of features (Wang et al., ICCV 2019), pure PyTorch.

The variant of CSWin-UNet's release: compressor 1×1 conv C → C/4, content encoder
k_enc×k_enc conv → σ²·k_up² kernel logits, pixel shuffle by σ, softmax over the
k_up² neighbourhood, reassembly of the zero-padded k_up×k_up neighbourhood of the
source pixel, and an extra 1×1 output projection C → C_out (not in the original
CARAFE). Works for any H×W and any integer σ; no custom CUDA kernel is needed.

Index conventions (pinned by the official fixtures): kernel position n addresses
the offset ``(n // k_up − r, n % k_up − r)``, r = k_up // 2 (row-major, as
``F.unfold``); the encoder channel for position n and sub-pixel (a, b) is
``n·σ² + a·σ + b`` (what ``F.pixel_shuffle`` expects).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CARAFE"]


class CARAFE(nn.Module):
    """Upsample by ``scale`` with content-predicted reassembly kernels.

    x: (B, C, H, W) → (B, C_out, σH, σW).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        scale: int = 2,
        up_kernel: int = 3,
        encoder_kernel: int = 3,
        compressed_channels: int | None = None,
    ) -> None:
        super().__init__()
        if up_kernel % 2 == 0 or encoder_kernel % 2 == 0:
            raise ValueError("CARAFE kernels must be odd")
        out_channels = out_channels or in_channels
        compressed_channels = compressed_channels or max(in_channels // 4, 1)
        self.scale, self.up_kernel = scale, up_kernel
        self.compressor = nn.Conv2d(in_channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels, scale * scale * up_kernel * up_kernel, encoder_kernel, padding=encoder_kernel // 2
        )
        self.projection = nn.Conv2d(in_channels, out_channels, 1)

    def reassembly_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel prediction ψ: (B, C, H, W) → softmax-normalised (B, k², σH, σW)."""
        logits = F.pixel_shuffle(self.content_encoder(self.compressor(x)), self.scale)
        return logits.softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, k2 = self.scale, self.up_kernel**2
        kernels = self.reassembly_kernels(x)  # (B, k², sH, sW)
        # (B, k², sH, sW) → (B, H, W, s², k²): the s² sub-pixel kernels of each source pixel
        kernels = kernels.view(b, k2, h, s, w, s).permute(0, 2, 4, 3, 5, 1).reshape(b, h, w, s * s, k2)
        # Zero-padded k×k neighbourhoods of every source pixel: (B, H, W, k², C)
        patches = F.unfold(x, self.up_kernel, padding=self.up_kernel // 2)
        patches = patches.view(b, c, k2, h, w).permute(0, 3, 4, 2, 1)
        out = torch.matmul(kernels, patches)  # (B, H, W, s², C) — reassembly φ as one matmul
        out = out.view(b, h, w, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * s, w * s)
        return self.projection(out)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, up_kernel={self.up_kernel}"
