"""GLARE Stage I: the normal-light VQGAN codebook, trained with a **project-defined** recipe (not the release's).

The release ships no Stage-I training code (``VQModel.training_step`` references an undefined loss;
spec §3.3, §6 item 3): everything here is the project's choice, labelled as such in every report
(``meta["recipe"]``). The losses are :class:`~lightning_modules.vqgan_losses.VQGANLoss` (taming's
VQ-f4 structure with the paper's weights as quoted by a third party); the data are the
**normal-light** images of the training pairs (``batch["target"]``; the paper names DIV2K +
Flickr2K, for which the project has no datamodule: a stand-in, labelled).

Optimisation: one Adam over two parameter groups, the autoencoder's and the discriminator's
(taming's two Adams have the same settings, lr and betas (0.5, 0.9), and Adam is per parameter, so
this is the same update), stepped once per batch: the generator loss reaches only the autoencoder
(the discriminator's parameters are frozen while it scores the reconstruction), the hinge loss
only the discriminator (on the detached reconstruction). Difference from taming's PL-1.x loop:
the discriminator sees the reconstruction computed before the autoencoder's update of that batch
(taming runs the autoencoder again for its second optimizer). LR: taming's ``base_learning_rate``
4.5e-6 × batch (``scale_lr``), constant.

Evaluation (:class:`~lightning_modules.enhancement.EnhancementTask`): the **reconstruction** of the
normal-light image (input = reference = ``batch["target"]``), so ``test/psnr`` is reconstruction PSNR.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_modules.enhancement import EnhancementTask
from lightning_modules.vqgan_losses import VQGANLoss

__all__ = ["GlareStage1Module", "stage1_losses"]

STAGE1_RECIPE = ("project-defined Stage-I recipe (the release has no Stage-I training code): taming VQ-f4 "
                 "structure, the paper's loss weights as quoted by a third party")


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=4.5e-6 * 4, betas=(0.5, 0.9))


def stage1_losses(vqgan: nn.Module, loss: VQGANLoss, images: Tensor, step: int) -> dict[str, Tensor]:
    """One Stage-I step's losses on ``images (B, 3, H, W)`` in [0, 1]: ``{"loss": G + D, "g/...", "d/..."}``.

    ``loss["loss"]``'s gradient is the generator loss on the autoencoder and the hinge loss on the
    discriminator (module docstring).
    """
    recon, qloss = vqgan(images)
    disc = loss.discriminator
    frozen = [p for p in disc.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        g = loss.generator(images, recon, qloss, step, last_layer=vqgan.decoder.conv_out.weight)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    d = loss.discriminator_loss(images, recon.detach(), step)
    out = {"loss": g["loss"] + d["loss"]}
    out.update({f"g/{k}": v for k, v in g.items()})
    out.update({f"d/{k}": v for k, v in d.items()})
    return out


class GlareStage1Module(EnhancementTask):
    """Trains a :class:`~models.glare_vqgan.GlareVQGAN` (``net``) on normal-light images (module docstring).

    Args:
        net: the VQGAN (``glare_vqgan`` / ``glare_vqgan_test``).
        loss: the Stage-I losses (default :class:`~lightning_modules.vqgan_losses.VQGANLoss()`).
        optimizer: factory called with the two parameter groups (default Adam 1.8e-5, betas (0.5, 0.9)).
        eval_padding, lpips_weights, compile, compile_mode: :class:`~lightning_modules.enhancement.EnhancementTask`.

    Batches: ``{"target": (B, 3, H, W) normal-light in [0, 1], ...}`` (the low-light image is not used).
    """

    input_key = "target"

    def __init__(self, net: nn.Module, loss: VQGANLoss | None = None,
                 optimizer: OptimizerCallable = _default_optimizer, eval_padding: str = "release",
                 lpips_weights: str | None = None, compile: bool = False, compile_mode: str | None = None) -> None:
        super().__init__(eval_padding, lpips_weights, compile, compile_mode)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer"])
        self.net = net
        self.loss = loss if loss is not None else VQGANLoss()
        self.optimizer_factory = optimizer

    def configure_optimizers(self) -> torch.optim.Optimizer:
        autoencoder = [p for p in self.net.parameters() if p.requires_grad]
        return self.optimizer_factory([{"params": autoencoder},
                                       {"params": list(self.loss.discriminator.parameters())}])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["target"]
        losses = stage1_losses(self.net, self.loss, images, self.global_step)
        n = len(images)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        for key in ("g/rec", "g/codebook", "g/g", "d/loss"):
            self.log(f"train/{key}", losses[key], batch_size=n)
        return losses["loss"]

    def enhance(self, low: Tensor) -> dict[str, Tensor]:
        return {"reconstruction": self.net(low)[0]}

    def report_meta(self) -> dict[str, Any]:
        return {**super().report_meta(), "stage": "I", "recipe": STAGE1_RECIPE,
                "evaluated": "reconstruction of the normal-light test images"}
