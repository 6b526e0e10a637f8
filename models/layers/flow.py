"""Normalising-flow layers of the SRFlow / LLFlow family as GLARE's I-LNF uses them (arXiv 2407.12431).

Every invertible layer maps ``forward(x, ..., logdet) -> (z, logdet)`` (the normalising direction,
data → latent) and ``inverse(z, ..., logdet) -> (x, logdet)``; ``logdet`` is ``(B,)`` (``None`` starts
from zeros) and gains ``log|det ∂z/∂x|`` going forward, loses it going back.

* :class:`ActNorm2d`: ``z = (x + b)·exp(s)`` with data-dependent initialisation (Glow).
* :class:`InvertibleConv1x1`: ``z = W x`` per pixel, ``W`` a full ``C×C`` matrix (no LU form, as released).
* :class:`FeatureAffine`: the feature-conditional affine on all channels, ``[t, s] = F(cond)``.
* :class:`SelfConditionalAffine`: the affine coupling ``z2 ← (z2 + t)·σ(s + 2)``, ``[t, s] = F(z1, cond)``.
* :class:`ConditionalAffineCoupling`: both, in that order (the release's ``CondAffineSeparatedAndCond``).
* :class:`FlowStep`: ActNorm → 1×1 conv → optional coupling.
* :func:`squeeze2d` / :func:`unsqueeze2d`: SRFlow's space-to-channel reshuffle (GLARE's flow uses none).

Each conditioning net ``F`` (:func:`coupling_net`) is ``ActNormConv2d(3×3) → ReLU → ActNormConv2d(1×1) →
ReLU → ZeroConv2d(3×3)``; its output channels are interleaved ``[t0, s0, t1, s1, ...]`` and the scale is
``sigmoid(s + 2) + 1e-4``. Written by hand: neither torch, timm nor torchvision ships flow layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ActNorm2d",
    "ActNormConv2d",
    "ConditionalAffineCoupling",
    "FeatureAffine",
    "FlowStep",
    "InvertibleConv1x1",
    "SelfConditionalAffine",
    "ZeroConv2d",
    "affine_from_net",
    "coupling_net",
    "squeeze2d",
    "unsqueeze2d",
]


def _start(logdet: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0]) if logdet is None else logdet


class ActNorm2d(nn.Module):
    """Per-channel affine ``z = (x + bias)·exp(logs)``; ``log|det| = H·W·Σ logs``. ``x``: ``(B, C, H, W)``.

    Data-dependent initialisation (Glow): on the first call in train mode, if every ``bias`` is exactly
    0, ``bias = −mean(x)`` and ``logs = log(scale / (std(x) + 1e-6))`` over (B, H, W) (population std),
    so that the output has zero mean and unit variance per channel. A non-zero ``bias`` (a loaded
    checkpoint) skips it. ``inited`` is a plain attribute, not state, as in the release; as there, the
    first training call initialises in whichever direction it runs.
    """

    def __init__(self, num_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_features = num_features
        self.scale = float(scale)
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.inited = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation from ``x`` (train mode only; a no-op once ``bias`` is non-zero)."""
        if not self.training:
            return
        if (self.bias != 0).any():
            self.inited = True
            return
        mean = x.float().mean(dim=(0, 2, 3), keepdim=True)
        std = (x.float() - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(self.scale / (std + 1e-6)))
        self.inited = True

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return self.logs.sum() * (x.shape[2] * x.shape[3])

    def forward(self, x: torch.Tensor, logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.inited:
            self.initialize(x)
        return (x + self.bias) * torch.exp(self.logs), _start(logdet, x) + self._logdet(x)

    def inverse(self, z: torch.Tensor, logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.inited:
            self.initialize(z)
        return z * torch.exp(-self.logs) - self.bias, _start(logdet, z) - self._logdet(z)


class InvertibleConv1x1(nn.Module):
    """Glow's invertible 1×1 convolution ``z = W x`` (``W``: ``(C, C)``, random orthogonal at init).

    ``log|det| = H·W·log|det W|``. The inverse uses ``W⁻¹`` computed in float64 and cast back to W's
    dtype, as the release does. The release draws the orthogonal start from NumPy's generator; ours
    draws it from torch's (same distribution, seeded by ``torch.manual_seed``).
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(num_channels, num_channels))[0])

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return torch.slogdet(self.weight)[1] * (x.shape[2] * x.shape[3])

    def forward(self, x: torch.Tensor, logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.conv2d(x, self.weight.view(self.num_channels, self.num_channels, 1, 1))
        return z, _start(logdet, x) + self._logdet(x)

    def inverse(self, z: torch.Tensor, logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w_inv = torch.inverse(self.weight.double()).to(self.weight.dtype)
        x = F.conv2d(z, w_inv.view(self.num_channels, self.num_channels, 1, 1))
        return x, _start(logdet, z) - self._logdet(z)


class ActNormConv2d(nn.Conv2d):
    """The release's ``flow.Conv2d``: bias-free 'same'-padded conv, weights N(0, 0.05²), then ActNorm2d.

    ``(B, C_in, H, W) -> (B, C_out, H, W)``; the ActNorm is data-dependently initialised like any other.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, weight_std: float = 0.05,
                 actnorm_scale: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, weight_std)
        self.actnorm = ActNorm2d(out_channels, actnorm_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actnorm(super().forward(x))[0]


class ZeroConv2d(nn.Conv2d):
    """The release's ``Conv2dZeros``: 'same'-padded conv with bias whose output is scaled by ``exp(3·logs)``.

    Weights, bias and ``logs`` (``(C_out, 1, 1)``) start at zero, so a fresh coupling net outputs 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, logscale_factor: float = 3.0):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


def coupling_net(in_channels: int, out_channels: int, hidden_channels: int = 64, n_hidden_layers: int = 1,
                 kernel_hidden: int = 1) -> nn.Sequential:
    """The coupling's conditioning net ``F``: ``(B, C_in, H, W) -> (B, C_out, H, W)`` (indices 0, 2, 4 as released)."""
    layers: list[nn.Module] = [ActNormConv2d(in_channels, hidden_channels, 3), nn.ReLU(inplace=False)]
    for _ in range(n_hidden_layers):
        layers += [ActNormConv2d(hidden_channels, hidden_channels, kernel_hidden), nn.ReLU(inplace=False)]
    layers.append(ZeroConv2d(hidden_channels, out_channels, 3))
    return nn.Sequential(*layers)


def affine_from_net(h: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, scale)`` from a net output ``h`` ``(B, 2C, H, W)``: ``shift = h[:, 0::2]``,
    ``scale = sigmoid(h[:, 1::2] + 2) + eps`` (interleaved channels, the release's 'cross' split)."""
    return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + eps


def _sum_log(scale: torch.Tensor) -> torch.Tensor:
    return torch.log(scale).flatten(1).sum(1)


class FeatureAffine(nn.Module):
    """Feature-conditional affine on all channels: ``z = (x + t)·s``, ``[t, s] = F(cond)``.

    ``x``: ``(B, C, H, W)``; ``cond``: ``(B, C_cond, H, W)``. ``log|det| = Σ_{C,H,W} log s``.
    """

    def __init__(self, channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.net = coupling_net(cond_channels, 2 * channels, hidden_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = affine_from_net(self.net(cond), self.eps)
        return (x + shift) * scale, _start(logdet, x) + _sum_log(scale)

    def inverse(self, z: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = affine_from_net(self.net(cond), self.eps)
        return z / scale - shift, _start(logdet, z) - _sum_log(scale)


class SelfConditionalAffine(nn.Module):
    """Affine coupling: ``z1 = x[:, :C//2]`` passes, ``z2 = (x2 + t)·s`` with ``[t, s] = F(cat(z1, cond))``.

    ``x``: ``(B, C, H, W)``; ``cond``: ``(B, C_cond, H, W)``. ``log|det| = Σ_{C2,H,W} log s``.
    """

    def __init__(self, channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.split = channels // 2
        self.net = coupling_net(self.split + cond_channels, 2 * (channels - self.split), hidden_channels)

    def _affine(self, z1: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return affine_from_net(self.net(torch.cat([z1, cond], dim=1)), self.eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = x[:, : self.split], x[:, self.split:]
        shift, scale = self._affine(z1, cond)
        return torch.cat([z1, (z2 + shift) * scale], dim=1), _start(logdet, x) + _sum_log(scale)

    def inverse(self, z: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = z[:, : self.split], z[:, self.split:]
        shift, scale = self._affine(z1, cond)
        return torch.cat([z1, z2 / scale - shift], dim=1), _start(logdet, z) - _sum_log(scale)


class ConditionalAffineCoupling(nn.Module):
    """The release's ``CondAffineSeparatedAndCond``: :class:`FeatureAffine` then :class:`SelfConditionalAffine`.

    ``x``: ``(B, C, H, W)``, ``cond``: ``(B, C_cond, H, W)``; the inverse undoes them in reverse order.
    """

    def __init__(self, channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.feature_affine = FeatureAffine(channels, cond_channels, hidden_channels, eps)
        self.self_affine = SelfConditionalAffine(channels, cond_channels, hidden_channels, eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.feature_affine(x, cond, logdet)
        return self.self_affine(x, cond, logdet)

    def inverse(self, z: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet = self.self_affine.inverse(z, cond, logdet)
        return self.feature_affine.inverse(z, cond, logdet)


class FlowStep(nn.Module):
    """One flow step: ActNorm2d → InvertibleConv1x1 → (``coupling=True``) ConditionalAffineCoupling.

    ``coupling=False`` is the release's ``noCoupling`` step (its ``additionalFlowNoAffine``); ``cond`` is
    then ignored. ``z``: ``(B, C, H, W)``, ``cond``: ``(B, C_cond, H, W)``.
    """

    def __init__(self, channels: int, cond_channels: int = 64, hidden_channels: int = 64, coupling: bool = True,
                 actnorm_scale: float = 1.0, affine_eps: float = 1e-4) -> None:
        super().__init__()
        self.actnorm = ActNorm2d(channels, actnorm_scale)
        self.invconv = InvertibleConv1x1(channels)
        self.coupling = (ConditionalAffineCoupling(channels, cond_channels, hidden_channels, affine_eps)
                         if coupling else None)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet = self.actnorm(x, logdet)
        z, logdet = self.invconv(z, logdet)
        if self.coupling is not None:
            z, logdet = self.coupling(z, cond, logdet)
        return z, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None = None,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.coupling is not None:
            z, logdet = self.coupling.inverse(z, cond, logdet)
        z, logdet = self.invconv.inverse(z, logdet)
        return self.actnorm.inverse(z, logdet)


def squeeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C·f², H/f, W/f)``, channel index ``c·f² + i·f + j`` for offset (i, j) (SRFlow's order).

    Volume preserving (log-det 0). GLARE's I-LNF has no squeeze; this serves flows that do.
    """
    b, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"squeeze2d: H, W = {h}, {w} not divisible by {factor}")
    x = x.view(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * factor * factor, h // factor, w // factor)


def unsqueeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Inverse of :func:`squeeze2d`: ``(B, C·f², H, W) -> (B, C, H·f, W·f)``."""
    b, c, h, w = x.shape
    if c % (factor * factor):
        raise ValueError(f"unsqueeze2d: C = {c} not divisible by {factor}²")
    x = x.view(b, c // (factor * factor), factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (factor * factor), h * factor, w * factor)
