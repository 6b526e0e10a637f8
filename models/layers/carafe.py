"""CARAFE: content-aware reassembly of features (Wang et al., ICCV 2019), pure PyTorch.

The variant of CSWin-UNet's release: compressor 1×1 conv C → C/4, content encoder
k_enc×k_enc conv → σ²·k_up² kernel logits, pixel shuffle by σ, softmax over the
k_up² neighbourhood, reassembly of the zero-padded k_up×k_up neighbourhood of the
source pixel, and an extra 1×1 output projection C → C_out (not in the original
CARAFE). Works for any H×W and any integer σ; no custom CUDA kernel is needed.

Fast path (``fast_path=True``, the default): the 1×1 projection (and a following per-pixel
linear head) runs **before** the reassembly, at the source resolution: reassembly weights sum
to 1 per output pixel and the zero padding maps to zero under a bias-free linear map, so
``W·φ(x) + b = φ(W·x) + b`` exactly (float rounding aside). It executes σ² times fewer
projection MACs and reassembles C_out instead of C channels. ``fast_path=False`` is the
release's order; MAC counters switch to it (:func:`lightning_modules.complexity.reference_forms`), so
reported MACs stay the architecture's.

Index conventions (pinned by the official fixtures): kernel position n addresses
the offset ``(n // k_up − r, n % k_up − r)``, r = k_up // 2 (row-major, as
``F.unfold``); the encoder channel for position n and sub-pixel (a, b) is
``n·σ² + a·σ + b`` (what ``F.pixel_shuffle`` expects).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CARAFE", "shuffle_subpixels"]


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
        fast_path: bool = True,
    ) -> None:
        super().__init__()
        self.fast_path = fast_path
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

    def _source_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """ψ per source pixel: (B, C, H, W) → (B·H·W, σ², k²), softmax over k² (= :meth:`reassembly_kernels`).

        Encoder channel ``n·σ² + a·σ + b`` is kernel position n of sub-pixel (a, b), so the
        channels-last logits viewed (…, k², σ²) need no pixel shuffle.
        """
        b, _, h, w = x.shape
        k2, s2 = self.up_kernel**2, self.scale**2
        logits = self.content_encoder(self.compressor(x)).permute(0, 2, 3, 1)  # (B, H, W, k²σ²)
        return logits.reshape(b * h * w, k2, s2).softmax(dim=1).transpose(1, 2)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-padded k×k neighbourhoods of every source pixel: (B, C, H, W) → (B·H·W, k², C)."""
        return _Neighbourhoods.apply(x, self.up_kernel)

    def subpixel_forward(self, x: torch.Tensor, head: nn.Conv2d | None = None) -> torch.Tensor:
        """CARAFE before the final pixel shuffle: (B, C, H, W) → (B, H, W, σ, σ, C_out).

        ``[b, i, j, a, c]`` is output pixel (σi + a, σj + c). Reassembly φ is one batched
        matmul of the per-pixel (σ², k²) kernels with the (k², C) neighbourhoods. ``head``: a
        bias-free 1×1 conv applied to the output as well (CSWin-UNet's classifier), giving
        (B, H, W, σ, σ, K). On the fast path the projection (and head) run first, on the source
        pixels (module docstring); otherwise on the sub-pixel layout (viewed as a channels-last
        (B, C, H, W·σ²) image, a plain GEMM), and only the output channels are interleaved.
        """
        b, c, h, w = x.shape
        s = self.scale
        if head is not None and head.bias is not None:
            raise ValueError("subpixel_forward's head must be a 1x1 convolution without bias")
        if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
            # Cast once: the compressor and the neighbourhoods (k² times larger) then share the
            # reduced-precision copy instead of autocast casting each of them.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        kernels = self._source_kernels(x)  # (B·H·W, σ², k²)
        if not self.fast_path:
            out = torch.bmm(kernels, self._patches(x))  # (B·H·W, σ², C)
            out = self.projection(out.view(b, h, w * s * s, c).permute(0, 3, 1, 2))  # (B, C_out, H, W·σ²)
            if head is not None:
                out = head(out)
            return out.permute(0, 2, 3, 1).reshape(b, h, w, s, s, -1)
        bias = self.projection.bias
        y = self.projection(x)  # (B, C_out, H, W) at the source resolution
        if bias is not None:
            # The bias goes on after the reassembly (the padding must stay zero). Subtracting it here,
            # not projecting bias-free, keeps the rounding the committed quick results were trained with.
            y = y - bias.view(1, -1, 1, 1).to(y.dtype)
        if head is not None:
            y = head(y)
            if bias is not None:
                bias = F.conv2d(bias.view(1, -1, 1, 1).to(head.weight.dtype), head.weight).flatten()
        out = torch.bmm(kernels.to(y.dtype), self._patches(y))  # (B·H·W, σ², C_out)
        if bias is not None:
            out = out + bias.to(out.dtype)
        return out.view(b, h, w, s, s, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C_out, σH, σW), stored channels-last (as (B, σH, σW, C_out))."""
        return shuffle_subpixels(self.subpixel_forward(x)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, up_kernel={self.up_kernel}, fast_path={self.fast_path}"


def shuffle_subpixels(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, σ, σ, C) sub-pixel layout → the (B, σH, σW, C) map (one copy)."""
    b, h, w, s, _, c = x.shape
    return x.transpose(2, 3).reshape(b, h * s, w * s, c)


class _Neighbourhoods(torch.autograd.Function):
    """(B, C, H, W) → (B·H·W, k², C): the zero-padded k×k neighbourhood of every pixel, channels last.

    Forward: one pad and one strided copy (the ``unfold`` view of the padded map, read
    channels-last). Backward: the adjoint is ``F.fold`` (col2im), after one copy into its
    (B, C·k², H·W) layout; autograd's own ``unfold_backward`` of the view is several times slower.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        b, c, h, w = x.shape
        r = k // 2
        ctx.k, ctx.hw = k, (h, w)
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, r, r, r, r))  # (B, H+2r, W+2r, C)
        windows = padded.unfold(1, k, 1).unfold(2, k, 1)  # (B, H, W, C, k, k), a view
        return windows.permute(0, 1, 2, 4, 5, 3).reshape(b * h * w, k * k, c)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        k, (h, w) = ctx.k, ctx.hw
        c = grad.shape[-1]
        b = grad.shape[0] // (h * w)
        cols = grad.view(b, h * w, k * k, c).permute(0, 3, 2, 1).reshape(b, c * k * k, h * w)
        return F.fold(cols, (h, w), k, padding=k // 2), None
