"""Stage I (normal-light VQGAN codebook) training losses: a project-defined recipe, labelled as such.

GLARE releases **no** Stage-I training code (``VQModel.training_step`` references an undefined
loss; spec §3.3, §6 item 3), so everything here is a documented choice, not the release:

* **Structure: taming-transformers' ``VQLPIPSWithDiscriminator``** (the VQ-f4 / VQGAN recipe):
  generator loss ``rec + codebook_weight · L_codebook + λ_adv · disc_factor · L_G``; the
  reconstruction term ``rec = pixel_weight · mean|x − x̂| + perceptual_weight · P(x̂, x)``;
  a PatchGAN discriminator (:class:`NLayerDiscriminator`: pix2pix ``NLayerDiscriminator``,
  64 filters, 3 layers, BatchNorm, N(0, 0.02) init) trained with the hinge loss
  ``½(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))``; the generator's adversarial term
  ``L_G = −mean D(x̂)``; the **adaptive weight** ``λ_adv = disc_weight · ‖∇_W rec‖ / (‖∇_W L_G‖ +
  1e-4)`` (clamped to [0, 1e4], detached) with ``W`` the decoder's last layer; and the
  discriminator **off before** ``disc_start`` steps (``disc_factor`` 0 there, both losses).
  ``disc_start`` defaults to taming's ImageNet VQGAN config's 250001.
* **Weights: the paper's, as quoted by a third party** (spec addendum): adversarial 0.0005
  (``disc_weight``), code 1 (``codebook_weight``), perceptual 0.01, SSIM 0.2; the paper's
  "semantic" term (0.1, a VGG relu3_4 feature loss through an extra head) is left out: the
  release's head for it is disabled (``vgg_feat`` None). taming's own weights
  (``perceptual="lpips_vgg"``, ``perceptual_weight=1``, ``ms_ssim_weight=0``,
  ``disc_weight=0.8``) are one set of arguments away.
* **Perceptual term**: ``"vgg_mse"`` (default): Stage III's VGG16 relu1_2/2_2/3_3 feature MSE
  (:class:`~lightning_modules.enhancement_losses.VGG16Perceptual`), whose 0.01 weight the
  quoted paper weight matches; ``"lpips_vgg"``: taming's LPIPS-VGG (torchmetrics' port: the
  linear heads it ships, the VGG16 backbone from the same user file). The SSIM term is the
  release's MS-SSIM of Stage III (:func:`~lightning_modules.enhancement_losses.release_ms_ssim`)
  on the reconstruction clipped to [0, 1], weight 0.2 as ``0.2 · (1 − MS-SSIM)``.
* The codebook loss is the quantiser's (``models.layers.vector_quantizer``: β 0.25, non-legacy).

Images are in [0, 1]. Without a VGG16 weights file the perceptual term is 0 (one warning).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.enhancement_losses import VGG16Perceptual, release_ms_ssim

__all__ = ["NLayerDiscriminator", "hinge_d_loss", "adopt_weight", "adaptive_weight", "LPIPSVGG", "VQGANLoss"]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``x (B, C, H, W)`` → logits ``(B, 1, H', W')`` (``H' = H/8 − 2`` for 3 layers).

    Conv 4x4 stride 2 + LeakyReLU(0.2); ``n_layers − 1`` × (conv 4x4 stride 2, BatchNorm, LeakyReLU);
    conv 4x4 stride 1, BatchNorm, LeakyReLU; conv 4x4 stride 1 → 1 channel. Convs N(0, 0.02),
    BatchNorm weight N(1, 0.02) and bias 0 (taming's ``weights_init``).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``½ (mean relu(1 − real) + mean relu(1 + fake))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adopt_weight(weight: float, global_step: int, threshold: int) -> float:
    """``weight`` from ``threshold`` steps on, 0 before (taming's discriminator start)."""
    return 0.0 if global_step < threshold else weight


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float) -> Tensor:
    """``disc_weight · ‖∇ rec‖ / (‖∇ g‖ + 1e-4)`` w.r.t. ``last_layer``, clamped to [0, 1e4], detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


class LPIPSVGG(nn.Module):
    """taming's perceptual loss: LPIPS with a VGG16 backbone (torchmetrics' port), per batch mean.

    The linear heads are the ``vgg.pth`` that ships inside torchmetrics; the backbone comes from a
    torchvision VGG16 state dict file (``features.*``). ``forward(x, y)`` on images in [0, 1].
    """

    _SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))

    def __init__(self, vgg_weights: str | Path):
        super().__init__()
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        state = torch.load(Path(vgg_weights).expanduser(), map_location="cpu", weights_only=True)
        self.net = _NoTrainLpips(net="vgg", pretrained=True, pnet_rand=True)  # heads only; backbone below
        where = {i: s for s, indices in self._SLICES for i in indices}
        mapped = {f"slice{where[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v for k, v in state.items()
                  if k.startswith("features.") and int(k.split(".")[1]) in where}
        self.net.net.load_state_dict(mapped, strict=True)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(x, y, normalize=True).mean()


class VQGANLoss(nn.Module):
    """The Stage-I recipe of the module docstring: :meth:`generator` and :meth:`discriminator_loss`.

    Args:
        disc_start: global step from which the discriminator and its generator term act.
        codebook_weight, pixel_weight, perceptual_weight, ms_ssim_weight, disc_weight: the weights.
        perceptual: ``"vgg_mse"`` or ``"lpips_vgg"``; ``vgg_weights``: the VGG16 file both read.
        adaptive: use taming's adaptive adversarial weight (else ``disc_weight`` fixed).
        disc_factor: the discriminator's factor once started (1).
        disc_in_channels, disc_ndf, disc_layers: the PatchGAN.
    """

    def __init__(self, disc_start: int = 250001, codebook_weight: float = 1.0, pixel_weight: float = 1.0,
                 perceptual_weight: float = 0.01, ms_ssim_weight: float = 0.2, disc_weight: float = 0.0005,
                 perceptual: Literal["vgg_mse", "lpips_vgg"] = "vgg_mse", vgg_weights: str | None = None,
                 adaptive: bool = True, disc_factor: float = 1.0, disc_in_channels: int = 3, disc_ndf: int = 64,
                 disc_layers: int = 3):
        super().__init__()
        if perceptual not in ("vgg_mse", "lpips_vgg"):
            raise ValueError(f"perceptual must be 'vgg_mse' or 'lpips_vgg', got {perceptual!r}")
        self.disc_start, self.disc_factor, self.adaptive = int(disc_start), float(disc_factor), bool(adaptive)
        self.codebook_weight, self.pixel_weight = codebook_weight, pixel_weight
        self.perceptual_weight, self.ms_ssim_weight, self.disc_weight = perceptual_weight, ms_ssim_weight, disc_weight
        self.perceptual: nn.Module | None
        if perceptual == "vgg_mse":
            self.perceptual = VGG16Perceptual(vgg_weights)
            if not self.perceptual.available:
                self.perceptual = None
        elif vgg_weights is not None and Path(vgg_weights).expanduser().is_file():
            self.perceptual = LPIPSVGG(vgg_weights)
        else:
            self.perceptual = None
            warnings.warn(f"LPIPS-VGG perceptual loss term skipped (contributes 0): VGG16 weights file "
                          f"{vgg_weights!r} not given or not found", stacklevel=2)
        self.discriminator = NLayerDiscriminator(disc_in_channels, disc_ndf, disc_layers)

    def reconstruction(self, inputs: Tensor, recon: Tensor) -> dict[str, Tensor]:
        """The weighted terms ``pixel``, ``perceptual``, ``ms_ssim`` and their sum ``rec``."""
        terms = {"pixel": self.pixel_weight * (inputs - recon).abs().mean()}
        p = self.perceptual(recon, inputs) if self.perceptual is not None else recon.new_zeros(())
        terms["perceptual"] = self.perceptual_weight * p
        if self.ms_ssim_weight:
            terms["ms_ssim"] = self.ms_ssim_weight * (1 - release_ms_ssim(recon.clamp(0, 1), inputs.clamp(0, 1)))
        else:
            terms["ms_ssim"] = recon.new_zeros(())
        terms["rec"] = terms["pixel"] + terms["perceptual"] + terms["ms_ssim"]
        return terms

    def generator(self, inputs: Tensor, recon: Tensor, codebook_loss: Tensor, global_step: int,
                  last_layer: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss", "rec", "pixel", "perceptual", "ms_ssim", "codebook", "g", "d_weight", "disc_factor"}``.

        ``last_layer``: the decoder's last weight, for the adaptive weight (``None``: ``disc_weight``).
        """
        terms = self.reconstruction(inputs, recon)
        factor = adopt_weight(self.disc_factor, global_step, self.disc_start)
        g_loss = -self.discriminator(recon).mean() if factor > 0 else recon.new_zeros(())
        if factor > 0 and self.adaptive and last_layer is not None and torch.is_grad_enabled():
            d_weight = adaptive_weight(terms["rec"], g_loss, last_layer, self.disc_weight)
        else:
            d_weight = recon.new_tensor(self.disc_weight)
        codebook = self.codebook_weight * codebook_loss.mean()
        loss = terms["rec"] + codebook + d_weight * factor * g_loss
        return {"loss": loss, **terms, "codebook": codebook, "g": g_loss, "d_weight": d_weight,
                "disc_factor": recon.new_tensor(factor)}

    def discriminator_loss(self, inputs: Tensor, recon: Tensor, global_step: int) -> dict[str, Tensor]:
        """``{"loss": disc_factor · hinge, "logits_real", "logits_fake"}`` (the reconstruction detached)."""
        factor = adopt_weight(self.disc_factor, global_step, self.disc_start)
        real, fake = self.discriminator(inputs.detach()), self.discriminator(recon.detach())
        return {"loss": factor * hinge_d_loss(real, fake), "logits_real": real.mean().detach(),
                "logits_fake": fake.mean().detach()}
