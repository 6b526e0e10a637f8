"""GLARE's released Stage III loss: L1 + 0.01 · VGG16 perceptual + 0.2 · (1 − MS-SSIM).

From ``code/models/VQLLFLOWD_model.py`` (``optimize_parameters``), ``code/models/modules/losses.py``
(``PerceptualNetwork``) and the vendored ``pytorch_msssim`` (GLARE @ 7ea5027; spec §3.2). With
``sr = clamp(out, 0, 1)``, NaNs of ``sr`` set to 0 (and masked out of the L1)::

    L = mean|sr − gt| + 0.01 · P(sr, gt) + 0.2 · (1 − MS-SSIM(sr, gt))

* **P** (:class:`VGG16Perceptual`): torchvision's ``vgg16().features[:16]``, frozen; the mean of
  the three MSEs of the features after ``relu1_2`` (index 3), ``relu2_2`` (8) and ``relu3_3``
  (15), on the images in [0, 1] **without ImageNet normalisation** (``imagenet_norm=True`` is the
  switch). The release downloads ImageNet weights; here they come from a user-given file
  (torchvision's ``vgg16-397923af.pth`` layout); without one the term is skipped (0) with one
  warning at construction.
* **MS-SSIM** (:func:`release_ms_ssim`) as ``pytorch_msssim.msssim(sr, gt, normalize=True)``
  (the jorge-pessoa package the release vendors): 5 scales, weights (0.0448, 0.2856, 0.3001,
  0.2363, 0.1333), 2 x 2 average pooling between scales, Gaussian window 11 (σ 1.5; shrunk to
  the image side when smaller), *valid* convolution (no padding); the data range from the
  first image (255 if its max > 128 else 1, minus −1 if its min < −0.5 else 0: 1 here); per
  scale the SSIM and contrast terms are means over the **whole batch**; then ``(x + 1) / 2``
  and the package's product ``prod(cs[:4]^w[:4] · ssim[4]^w[4])``, which raises the last
  scale's term to the 4th power (standard MS-SSIM: ``prod(cs[:4]^w[:4]) · ssim[4]^w[4]``,
  ``product="standard"``). Written by hand because torchmetrics' MS-SSIM differs in every one
  of these points (per-image scores, reflection padding, the standard product, fixed range).
  The vendored package's source is not in the stored snapshot of the release (only its
  ``.pyc``); both published versions of jorge-pessoa/pytorch-msssim compute the above for
  ``normalize=True``.

The logged terms are the weighted ones, as the release logs them (``l1``, ``perceptual`` = 0.01
P, ``ms_ssim`` = 0.2 (1 − MS-SSIM)).

Deviations: the VGG weights come from a file, not a download; the release computes the VGG on
``cuda`` unconditionally (here: the input's device).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

__all__ = ["MS_SSIM_WEIGHTS", "VGG16_LAYERS", "release_ms_ssim", "vgg16_features", "VGG16Perceptual",
           "GLAREStage3Loss"]

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: ``vgg16().features`` indices of relu1_2, relu2_2, relu3_3
VGG16_LAYERS: tuple[int, ...] = (3, 8, 15)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _gaussian_window(size: int, channels: int, sigma: float, like: Tensor) -> Tensor:
    """``(C, 1, size, size)`` normalised Gaussian, centred at ``size // 2`` (the package's ``create_window``)."""
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)], dtype=torch.float32)
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).to(device=like.device, dtype=like.dtype)


def _ssim_cs(img1: Tensor, img2: Tensor, window_size: int, val_range: float | None) -> tuple[Tensor, Tensor]:
    """``(mean SSIM, mean contrast-structure)`` over the whole batch: the package's ``ssim(..., full=True)``."""
    if val_range is None:
        max_val = 255.0 if torch.max(img1) > 128 else 1.0
        min_val = -1.0 if torch.min(img1) < -0.5 else 0.0
        val_range = max_val - min_val
    _, channels, height, width = img1.shape
    window = _gaussian_window(min(window_size, height, width), channels, 1.5, img1)
    mu1, mu2 = F.conv2d(img1, window, groups=channels), F.conv2d(img2, window, groups=channels)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, groups=channels) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, groups=channels) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, groups=channels) - mu12
    c1, c2 = (0.01 * val_range) ** 2, (0.03 * val_range) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma1_sq + sigma2_sq + c2
    ssim_map = ((2 * mu12 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean(), (v1 / v2).mean()


def release_ms_ssim(img1: Tensor, img2: Tensor, window_size: int = 11, val_range: float | None = None,
                    normalize: bool = True, product: Literal["release", "standard"] = "release",
                    weights: Sequence[float] = MS_SSIM_WEIGHTS) -> Tensor:
    """MS-SSIM of two batches ``(B, C, H, W)`` as the release computes it (module docstring); a scalar."""
    if img1.shape != img2.shape or img1.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(img1.shape)}, "
                         f"{tuple(img2.shape)}")
    if product not in ("release", "standard"):
        raise ValueError(f"product must be 'release' or 'standard', got {product!r}")
    w = torch.as_tensor(weights, dtype=img1.dtype, device=img1.device)
    sims, css = [], []
    for level in range(len(weights)):
        sim, cs = _ssim_cs(img1, img2, window_size, val_range)
        sims.append(sim)
        css.append(cs)
        if level + 1 < len(weights):
            img1, img2 = F.avg_pool2d(img1, (2, 2)), F.avg_pool2d(img2, (2, 2))
    sim_t, cs_t = torch.stack(sims), torch.stack(css)
    if normalize:  # the package's guard against NaNs (not in the MS-SSIM definition)
        sim_t, cs_t = (sim_t + 1) / 2, (cs_t + 1) / 2
    pow_cs, pow_sim = cs_t**w, sim_t**w
    if product == "release":
        return torch.prod(pow_cs[:-1] * pow_sim[-1])
    return torch.prod(pow_cs[:-1]) * pow_sim[-1]


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features[:16]`` (conv1_1 .. relu3_3), random weights, without building the classifier."""
    return make_layers(cfgs["D"], batch_norm=False)[: VGG16_LAYERS[-1] + 1]


class VGG16Perceptual(nn.Module):
    """Mean of the feature MSEs at VGG16 relu1_2, relu2_2, relu3_3 (the release's ``PerceptualNetwork``).

    Args:
        weights: a torchvision VGG16 state dict file (``features.*`` keys; ``classifier.*`` ignored);
            ``None`` or a missing file: :attr:`available` is False and :meth:`forward` returns 0.
        imagenet_norm: normalise inputs with the ImageNet mean/std first (the release does not).

    ``forward(x (B, 3, H, W), y (B, 3, H, W)) -> scalar``; the VGG is frozen (gradients reach ``x``).
    """

    def __init__(self, weights: str | None = None, imagenet_norm: bool = False):
        super().__init__()
        self.imagenet_norm = bool(imagenet_norm)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.features: nn.Sequential | None = None
        self.skip_reason: str | None = None
        path = Path(weights).expanduser() if weights is not None else None
        if path is None:
            self.skip_reason = "no VGG16 weights file given (vgg_weights)"
        elif not path.is_file():
            self.skip_reason = f"VGG16 weights file {path.absolute()} not found"
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            features = vgg16_features()
            wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            wanted = {k: v for k, v in wanted.items() if int(k.split(".")[0]) <= VGG16_LAYERS[-1]}
            features.load_state_dict(wanted, strict=True)
            for p in features.parameters():
                p.requires_grad_(False)
            self.features = features.eval()
        if self.skip_reason is not None:
            warnings.warn(f"VGG16 perceptual loss term skipped (contributes 0): {self.skip_reason}", stacklevel=2)

    @property
    def available(self) -> bool:
        return self.features is not None

    def train(self, mode: bool = True) -> VGG16Perceptual:
        super().train(mode)
        if self.features is not None:
            self.features.eval()  # frozen feature extractor
        return self

    def _feats(self, x: Tensor) -> list[Tensor]:
        assert self.features is not None
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_LAYERS:
                out.append(x)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.features is None:
            return x.new_zeros(())
        losses = [F.mse_loss(a, b) for a, b in zip(self._feats(x), self._feats(y), strict=True)]
        return sum(losses) / len(losses)


class GLAREStage3Loss(nn.Module):
    """``l1_weight · L1 + perceptual_weight · P + ms_ssim_weight · (1 − MS-SSIM)`` (module docstring).

    ``forward(output (B, 3, H, W), target (B, 3, H, W)) -> {"loss", "l1", "perceptual", "ms_ssim"}``,
    the last three weighted as the release logs them.
    """

    def __init__(self, vgg_weights: str | None = None, l1_weight: float = 1.0, perceptual_weight: float = 0.01,
                 ms_ssim_weight: float = 0.2, imagenet_norm: bool = False,
                 ms_ssim_product: Literal["release", "standard"] = "release"):
        super().__init__()
        self.l1_weight, self.perceptual_weight, self.ms_ssim_weight = l1_weight, perceptual_weight, ms_ssim_weight
        self.ms_ssim_product = ms_ssim_product
        self.perceptual = VGG16Perceptual(vgg_weights, imagenet_norm)

    def forward(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        # float32 also under bf16 autocast (the release trains in float32): MS-SSIM's variances
        # E[x²] − E[x]² cancel to noise in bf16, and its fractional powers of them turn into -inf/NaN
        with torch.autocast(output.device.type, enabled=False):
            sr = output.float().clamp(0, 1)
            finite = ~torch.isnan(sr)
            sr = torch.where(finite, sr, torch.zeros_like(sr))
            target = target.float()
            terms = {
                "l1": self.l1_weight * ((sr - target) * finite).abs().mean(),
                "perceptual": self.perceptual_weight * self.perceptual(sr, target),
                "ms_ssim": self.ms_ssim_weight * (1 - release_ms_ssim(sr, target, normalize=True,
                                                                       product=self.ms_ssim_product)),
            }
        return {"loss": terms["l1"] + terms["perceptual"] + terms["ms_ssim"], **terms}
