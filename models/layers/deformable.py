"""Modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019) through ``torchvision.ops.deform_conv2d``.

``y(p) = b + Σ_k w_k · m_k(p) · x(p·s + p_k + Δp_k(p))`` with learned offsets ``Δp_k`` and
modulation masks ``m_k ∈ (0, 1)``, sampled bilinearly (zero outside the image).

:class:`ModulatedDeformConv2d` owns its own offset/mask predictor ``conv_offset``, a plain
convolution with the main convolution's kernel, stride, padding and dilation, producing
``3 · deformable_groups · kh · kw`` channels that are split into thirds in the order
``[o1, o2, mask]``: ``offset = cat(o1, o2)`` (``2·G·kh·kw`` channels, torchvision's
``[group][kernel position][(dy, dx)]`` layout, the same as the BasicSR/mmcv CUDA kernels) and
``mask = sigmoid(third)``. This is BasicSR's ``ModulatedDeformConvPack`` / ``DCNv2Pack``
(used by GLARE's Stage-III warp), with the same parameter names (``weight``, ``bias``,
``conv_offset``) and initialisation: main weight ~ U(±1/√(C_in·kh·kw)), bias 0, ``conv_offset``
weights and bias 0 (initial offsets 0, mask 0.5).

The offsets can be predicted from the input itself (``forward(x)``) or from another feature
(``forward(x, feat)``, the "deformable alignment" form, ``offset_in_channels`` wide).
``modulated=False`` gives DCNv1 (no mask: the predictor outputs the ``2·G·kh·kw`` offsets only), and
``zero_init_offset=False`` keeps ``nn.Conv2d``'s default initialisation of the predictor.
torchvision's kernel runs on the CPU and on CUDA; the naive bilinear-sampling reference it is
checked against lives in ``tests/models/test_deformable.py``. On the CPU, non-finite offsets raise
``FloatingPointError`` first: torchvision's CPU kernel crashes the process (segmentation fault) on them.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["ModulatedDeformConv2d", "split_offset_mask"]


def split_offset_mask(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3·G·K, H, W)`` predictor output → ``offset (B, 2·G·K, H, W)``, ``mask (B, G·K, H, W)``.

    Thirds in the order ``[o1, o2, mask]``; ``offset = cat(o1, o2)``, ``mask = sigmoid(third)``.
    """
    o1, o2, mask = torch.chunk(out, 3, dim=1)
    return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 with its own offset/mask predictor. ``x: (B, C_in, H, W) → (B, C_out, H', W')``.

    Args:
        in_channels, out_channels: widths of the sampled input and of the output.
        kernel_size, stride, padding, dilation: as for ``nn.Conv2d`` (int or pair); shared by
            the predictor, so its output grid equals the output's.
        groups: grouped convolution of the main weight (``(C_out, C_in/groups, kh, kw)``).
        deformable_groups: ``G``, input-channel groups that share one offset field and mask.
        bias: learnable output bias (initialised to 0).
        offset_in_channels: width of the feature the offsets/masks are predicted from
            (default ``in_channels``).
        modulated: DCNv2 (masks, default) or DCNv1 (no mask).
        zero_init_offset: zero the predictor's weights and bias (default), else PyTorch's default init.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, deformable_groups: int = 1,
                 bias: bool = True, offset_in_channels: int | None = None, modulated: bool = True,
                 zero_init_offset: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by deformable_groups={deformable_groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deformable_groups = groups, deformable_groups
        self.modulated, self.zero_init_offset = modulated, zero_init_offset
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        kh, kw = self.kernel_size
        predicted = (3 if modulated else 2) * deformable_groups * kh * kw
        self.conv_offset = nn.Conv2d(offset_in_channels or in_channels, predicted, self.kernel_size, self.stride,
                                     self.padding, self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.zero_init_offset:
            nn.init.zeros_(self.conv_offset.weight)
            nn.init.zeros_(self.conv_offset.bias)
        else:
            self.conv_offset.reset_parameters()

    def offset_and_mask(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offsets ``(B, 2·G·kh·kw, H', W')`` and masks ``(B, G·kh·kw, H', W')`` (``None`` for DCNv1) from ``feat``."""
        out = self.conv_offset(feat)
        return split_offset_mask(out) if self.modulated else (out, None)

    def forward(self, x: torch.Tensor, feat: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: the features sampled; ``feat``: where offsets/masks come from (default ``x``)."""
        offset, mask = self.offset_and_mask(x if feat is None else feat)
        device = x.device.type
        if device == "cpu" and not bool(torch.isfinite(offset).all()):
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite offsets (NaN/inf in the weights or the features: did training "
                "diverge?); torchvision's CPU deform_conv2d would crash the process on them")
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            # torchvision has an autocast rule for CUDA only (float32, output in x's dtype): the same everywhere
            with torch.autocast(x.device.type, enabled=False):
                out = deform_conv2d(x.float(), offset.float(), self.weight.float(),
                                    None if self.bias is None else self.bias.float(), stride=self.stride,
                                    padding=self.padding, dilation=self.dilation,
                                    mask=None if mask is None else mask.float())
            return out.to(x.dtype)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}, modulated={self.modulated}")
