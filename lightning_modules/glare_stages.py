"""GLARE Stages II and III as LightningModules, with the parts frozen as released (spec §3.1, §3.2).

Both wrap the whole network ``net`` (:class:`models.glare.GLARE`; ``glare`` / ``glare_test``) and train
exactly :meth:`~models.glare.GLARE.trainable_parameters` of their stage (everything else has
``requires_grad=False`` and stays in eval mode).

**Stage II** (:class:`GlareStage2Module`): E_c + I-LNF on LL/NL pairs, the VQGAN frozen (its encoder gives
the NL latent y). ``objective="nll"`` (the release): the mean NLL in bits per latent pixel with
``train_gt_ratio`` (the net's, 0.2 as released); ``objective="l1"``: the release's ``weight_l1`` latent
regression ``mean|ŷ − y| + mean((ŷ − y)²)`` (Table 5 row (1); with ``latent_model="none"`` in the net,
row (3)). Adam (0.9, 0.999) lr 5e-4, weight decay 1e-5 on E_c and 0 on the flow (the release's two
groups), MultiStepLR γ 0.5 at 50/75/90/95 % of ``trainer.max_steps`` (80,000), per optimizer step. The
flow's ActNorms are initialised from the first training batch of rank 0, broadcast to every rank, in the
direction the objective runs (forward for the NLL, inverse for L1: as the release's first training call).
Evaluation: SimGLARE, the heat-0 latent decoded by the VQGAN (codebook retrieval), output ``simglare``.
Start: the VQGAN from ``stage1_checkpoint`` (the release's ``vqgan.pkl`` or our Stage-I checkpoint).

**Stage III** (:class:`GlareStage3Module`): the MFD (AFT) only, the released loss
(:class:`~lightning_modules.enhancement_losses.GLAREStage3Loss`: L1 + 0.01·VGG16 perceptual + 0.2·(1 − MS-SSIM))
on the image; E_c, flow and VQGAN run without gradients. Adam lr 5e-5, same schedule (40,000 steps).
Evaluation: ``glare`` (the MFD's image) and ``simglare`` (the NL decoder's image of the same codes).
Start: ``stage2_checkpoint`` (the release's ``*_G.pth`` or our Stage-II checkpoint, whose VQGAN comes
along) and, for a released Stage-II file, ``stage1_checkpoint`` (``vqgan.pkl``).

Model selection: the recipes monitor ``val/psnr_gt_mean`` on the validation split, which for LOL is
eval15, the test set (the release's ``best_psnr``: faithful, labelled ``selection`` in the reports);
``last.ckpt`` is always kept and tested too.

Deviations: the release trains with DataParallel on 2 GPUs and a GradScaler under autocast; here any
Lightning strategy and ``--trainer.precision 16-mixed`` / ``bf16-mixed``. The order of the release's
LR update relative to its optimizer step (``MultiStepLR_Restart``) is not verified; here the LR of
optimizer step k is the one after ``k`` scheduler steps.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import MultiStepLR

from lightning_modules.enhancement import EnhancementTask, multistep_milestones
from lightning_modules.enhancement_losses import GLAREStage3Loss
from lightning_modules.frozen_parts import FrozenPartsInEval
from lightning_modules.glare_weights import load_stage1_weights, load_stage2_weights

__all__ = ["GlareStage2Module", "GlareStage3Module", "init_actnorm", "stage2_loss", "stage3_loss",
           "stage2_param_groups", "RELEASED_MILESTONES", "finite_latent", "glare_images", "simglare_image",
           "MfdInit", "check_mfd_init", "init_mfd"]

Objective = Literal["nll", "l1"]
#: How the Stage-III MFD starts: ``"default"`` = the release (PyTorch's initialisation); ``"vqgan_decoder"`` =
#: project extension, its trunk a copy of the frozen VQGAN decoder (quick runs: on par with SimGLARE after ~50 steps).
MfdInit = Literal["default", "vqgan_decoder"]
RELEASED_MILESTONES: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)


def _adam_stage2(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=5e-4, betas=(0.9, 0.999), weight_decay=0.0)


def _adam_stage3(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=5e-5, betas=(0.9, 0.999), weight_decay=0.0)


# ---------------------------------------------------------------------------------------- shared by the modules
def stage2_param_groups(net, encoder_weight_decay: float) -> list[dict[str, Any]]:
    """The release's two Stage-II groups: E_c (``weight_decay`` 1e-5, "RRDB") and the flow (the optimizer's)."""
    trainable = net.trainable_parameters(2)
    encoder = [p for n, p in trainable if n.startswith("stage2.cond_encoder.")]
    rest = [p for n, p in trainable if not n.startswith("stage2.cond_encoder.")]
    groups = [{"params": encoder, "weight_decay": encoder_weight_decay}]
    return groups + ([{"params": rest}] if rest else [])


def stage2_loss(net, low: Tensor, target: Tensor, objective: Objective) -> Tensor:
    """Stage-II loss of one batch: the mean NLL (bits per latent pixel) or the latent L1 + MSE (module docstring)."""
    with torch.no_grad():
        gt_latent = net.gt_latent(target)  # the frozen VQGAN encoder's continuous latent of the NL image
    if objective == "nll":
        return net.nll(low, gt_latent).mean()
    if objective == "l1":
        return net.latent_regression_loss(low, gt_latent)
    raise ValueError(f"objective must be 'nll' or 'l1', got {objective!r}")


@torch.no_grad()
def init_actnorm(module, net, low: Tensor, target: Tensor, objective: Objective) -> None:
    """ActNorm data-dependent initialisation on rank 0's batch (broadcast), in the objective's direction."""
    if net.latent_model != "flow":
        return
    low, target = module.trainer.strategy.broadcast((low, target), src=0)
    gt_latent = net.gt_latent(target)
    if objective == "nll":
        net.stage2.initialize_actnorm(low, gt_latent)
    else:  # the release's first training call runs the inverse (heat 0) direction
        was = net.stage2.training
        net.stage2.train()
        net.latent(low)
        net.stage2.train(was)


def check_mfd_init(mfd_init: str, net) -> None:
    """Refuse an unknown ``mfd_init``, or ``"vqgan_decoder"`` for a net without the AFT decoder."""
    if mfd_init not in get_args(MfdInit):
        raise ValueError(f"mfd_init must be one of {get_args(MfdInit)}, got {mfd_init!r}")
    if mfd_init == "vqgan_decoder" and not net.aft:
        raise ValueError("mfd_init='vqgan_decoder' initialises the AFT decoder: build the net with aft=True")


def init_mfd(net, mfd_init: MfdInit) -> None:
    """Apply ``mfd_init`` once the VQGAN holds its Stage-I weights (``"default"``: nothing to do)."""
    if mfd_init == "vqgan_decoder":
        copied = net.deformable_decoder.init_from_decoder(net.vqgan.decoder)
        rank_zero_info(f"Stage III: the MFD trunk starts from the VQGAN decoder ({copied} tensors; project extension)")


def finite_latent(latent: Tensor, limit: float = 1e4) -> Tensor:
    """ŷ with non-finite entries set to 0 and the rest clamped to ±``limit``, before the AFT decoder.

    A diverged flow gives NaN/inf latents, and torchvision's CPU ``deform_conv2d`` crashes the process
    (segmentation fault) on NaN offsets instead of returning NaN. A finite latent passes unchanged.
    """
    if bool(torch.isfinite(latent).all()) and float(latent.abs().max()) <= limit:
        return latent
    return torch.nan_to_num(latent, nan=0.0, posinf=0.0, neginf=0.0).clamp(-limit, limit)


def glare_images(net, low: Tensor, train_decoder: bool = False) -> tuple[Tensor, Tensor]:
    """``(GLARE image, SimGLARE image)`` ``(B, 3, H, W)``: :meth:`~models.glare.GLARE.stage3_outputs` at heat 0,
    with :func:`finite_latent` before the MFD; E_c, flow and VQGAN without gradients when ``train_decoder``."""
    with torch.no_grad() if train_decoder else contextlib.nullcontext():
        cond = net.condition(low)
        latent = finite_latent(net.latent_from_condition(cond))
        nl_image, _, nl_feats = net.vqgan.decode(latent)
    return net.deformable_decoder(latent, nl_feats, cond.mid_feats), nl_image


def stage3_loss(net, loss_fn: GLAREStage3Loss, low: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Stage-III loss of one batch: the MFD's image against the NL image; the frozen parts run without gradients."""
    image, _ = glare_images(net, low, train_decoder=True)
    return loss_fn(image, target)


def simglare_image(net, low: Tensor) -> Tensor:
    """SimGLARE: the heat-0 latent, codebook retrieval and the VQGAN decoder → ``(B, 3, H, W)``."""
    return net.vqgan.decode(net.latent(low))[0]


def multistep(optimizer: torch.optim.Optimizer, trainer, fractions: Sequence[float], gamma: float) -> dict[str, Any]:
    total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else \
        int(trainer.estimated_stepping_batches)
    milestones = multistep_milestones(total, fractions)
    rank_zero_info(f"MultiStepLR: LR × {gamma} at optimizer steps {milestones} of {total}")
    return {"scheduler": MultiStepLR(optimizer, milestones, gamma), "interval": "step", "name": "train/lr"}


class _GlareStage(FrozenPartsInEval, EnhancementTask):
    """What both stage modules share: the frozen parts kept in eval mode, the LR schedule, the report."""

    stage: int

    def __init__(self, net: nn.Module, eval_padding: str, lpips_weights: str | None, lr_milestones: Sequence[float],
                 lr_gamma: float, compile: bool = False, compile_mode: str | None = None) -> None:
        super().__init__(eval_padding, lpips_weights, compile, compile_mode)
        self.net = net
        self.net.freeze_for_stage(self.stage)
        self.lr_milestones, self.lr_gamma = tuple(lr_milestones), float(lr_gamma)
        self.start_weights: list[str] = []

    def report_meta(self) -> dict[str, Any]:
        return {**super().report_meta(), "stage": "I" * self.stage, "start_weights": list(self.start_weights)}

    def missing_start(self, argument: str, what: str) -> None:
        """No previous-stage weights: an error on real data; a warning on a synthetic stand-in (smoke runs)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        message = (f"Stage {'I' * self.stage} starts from {what}: set model.init_args.{argument} to the previous "
                   "stage's checkpoint (the authors' released file or this project's last.ckpt)")
        if not getattr(datamodule, "is_synthetic", False):
            raise ValueError(message)
        rank_zero_warn(f"{message}. Synthetic data: continuing with the net's random weights (a pipeline check)")
        self.start_weights.append(f"random {what} (no {argument}; synthetic data)")


class GlareStage2Module(_GlareStage):
    """GLARE Stage II (module docstring).

    Args:
        net: :class:`~models.glare.GLARE` (``aft=False`` is SimGLARE; ``latent_model="none"`` Table 5 row (3)).
        stage1_checkpoint: the VQGAN weights (``vqgan.pkl`` or our Stage-I / stage checkpoint); ``None``:
            keep the net's (only for tests and smoke runs: a random VQGAN).
        objective: ``"nll"`` (released) or ``"l1"`` (Table 5 row (1); the release's comment: lr 5e-5).
        optimizer: factory called with the parameter groups (default Adam 5e-4, betas (0.9, 0.999)).
        encoder_weight_decay: E_c's weight decay (1e-5, the release's "RRDB" group).
        lr_milestones, lr_gamma: MultiStepLR at these fractions of ``trainer.max_steps``.
        eval_padding, lpips_weights, compile, compile_mode: :class:`~lightning_modules.enhancement.EnhancementTask`.
    """

    stage = 2

    def __init__(self, net: nn.Module, stage1_checkpoint: str | None = None, objective: Objective = "nll",
                 optimizer: OptimizerCallable = _adam_stage2, encoder_weight_decay: float = 1e-5,
                 lr_milestones: Sequence[float] = RELEASED_MILESTONES, lr_gamma: float = 0.5,
                 eval_padding: str = "release", lpips_weights: str | None = None, compile: bool = False,
                 compile_mode: str | None = None) -> None:
        if objective not in ("nll", "l1"):
            raise ValueError(f"objective must be 'nll' or 'l1', got {objective!r}")
        if objective == "nll" and net.latent_model != "flow":
            raise ValueError("objective='nll' needs the flow; without I-LNF (latent_model='none') use objective='l1'")
        super().__init__(net, eval_padding, lpips_weights, lr_milestones, lr_gamma, compile, compile_mode)
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.objective = objective
        self.optimizer_factory = optimizer
        self._actnorm_done = False

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:  # a resumed fit has every weight
            return
        if not self.hparams.stage1_checkpoint:
            self.missing_start("stage1_checkpoint", "the Stage-I VQGAN")
            return
        self.start_weights.append(load_stage1_weights(self.net, self.hparams.stage1_checkpoint))
        rank_zero_info(f"Stage II starts from: {self.start_weights[-1]}")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(stage2_param_groups(self.net, self.hparams.encoder_weight_decay))
        return {"optimizer": optimizer,
                "lr_scheduler": multistep(optimizer, self.trainer, self.lr_milestones, self.lr_gamma)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        low, target = batch["image"], batch["target"]
        if not self._actnorm_done:
            init_actnorm(self, self.net, low, target, self.objective)
            self._actnorm_done = True
        loss = stage2_loss(self.net, low, target, self.objective)
        self.log(f"train/{self.objective}", loss, prog_bar=True, batch_size=len(low))
        return loss

    def enhance(self, low: Tensor) -> dict[str, Tensor]:
        return {"simglare": simglare_image(self.net, low)}

    def report_meta(self) -> dict[str, Any]:
        return {**super().report_meta(), "objective": self.objective, "latent_model": self.net.latent_model,
                "evaluated": "SimGLARE (Stage-II latent, codebook retrieval, VQGAN decoder)"}


class GlareStage3Module(_GlareStage):
    """GLARE Stage III (module docstring).

    Args:
        net: :class:`~models.glare.GLARE` with ``aft=True``.
        stage2_checkpoint: E_c + flow (released ``*_G.pth`` or our Stage-II checkpoint); ``None``: keep the
            net's (tests and smoke runs only).
        stage1_checkpoint: the VQGAN (needed with a released Stage-II file; overrides the checkpoint's otherwise).
        loss: the released loss (default :class:`GLAREStage3Loss()`: without VGG weights its perceptual term is 0).
        optimizer: factory (default Adam 5e-5, betas (0.9, 0.999)).
        lr_milestones, lr_gamma, eval_padding, lpips_weights, compile, compile_mode: as :class:`GlareStage2Module`.
        mfd_init: ``"default"`` (the release) or ``"vqgan_decoder"`` (project extension, :data:`MfdInit`).
    """

    stage = 3

    def __init__(self, net: nn.Module, stage2_checkpoint: str | None = None, stage1_checkpoint: str | None = None,
                 loss: GLAREStage3Loss | None = None, optimizer: OptimizerCallable = _adam_stage3,
                 lr_milestones: Sequence[float] = RELEASED_MILESTONES, lr_gamma: float = 0.5,
                 eval_padding: str = "release", lpips_weights: str | None = None,
                 mfd_init: MfdInit = "default", compile: bool = False, compile_mode: str | None = None) -> None:
        if not net.aft:
            raise ValueError("Stage III trains the AFT decoder: build the net with aft=True")
        check_mfd_init(mfd_init, net)
        super().__init__(net, eval_padding, lpips_weights, lr_milestones, lr_gamma, compile, compile_mode)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer"])
        self.loss = loss if loss is not None else GLAREStage3Loss()
        self.optimizer_factory = optimizer

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            return
        if self.hparams.stage2_checkpoint:
            self.start_weights.append(load_stage2_weights(self.net, self.hparams.stage2_checkpoint))
            if "released" in self.start_weights[-1] and not self.hparams.stage1_checkpoint:
                raise ValueError("a released Stage-II file holds no VQGAN: also set model.init_args.stage1_checkpoint "
                                 "(vqgan.pkl)")
        else:
            self.missing_start("stage2_checkpoint", "the Stage-II E_c + flow")
        if self.hparams.stage1_checkpoint:
            self.start_weights.append(load_stage1_weights(self.net, self.hparams.stage1_checkpoint))
        init_mfd(self.net, self.hparams.mfd_init)
        for line in self.start_weights:
            rank_zero_info(f"Stage III starts from: {line}")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory([p for _, p in self.net.trainable_parameters(3)])
        return {"optimizer": optimizer,
                "lr_scheduler": multistep(optimizer, self.trainer, self.lr_milestones, self.lr_gamma)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        terms = stage3_loss(self.net, self.loss, batch["image"], batch["target"])
        n = len(batch["image"])
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=n)
        for key in ("l1", "perceptual", "ms_ssim"):
            self.log(f"train/{key}", terms[key], batch_size=n)
        return terms["loss"]

    def enhance(self, low: Tensor) -> dict[str, Tensor]:
        image, nl_image = glare_images(self.net, low)
        return {"glare": image, "simglare": nl_image}

    def report_meta(self) -> dict[str, Any]:
        return {**super().report_meta(), "evaluated": "GLARE (MFD image); simglare/: the NL decoder's image"}
