"""GLARE's three stages chained in one ``fit``, for the ablation tables' runs (one runner run = one chain).

The ablation runner trains one LightningModule per run (``trainer.fit`` then ``trainer.test``), so a
table whose rows differ in Stage II trains through :class:`GlareChainModule`:

1. **Stage I** (the VQGAN codebook), in ``setup("fit")``: from ``stage1_checkpoint`` when given (the
   release's ``vqgan.pkl`` or our Stage-I checkpoint); otherwise trained by a separate, silent
   ``Trainer`` fitting :class:`~lightning_modules.glare_stage1.GlareStage1Module` for ``stage1_steps``
   on the run's data (a fresh copy of its datamodule), **cached** in :class:`~lightning_modules.glare_cache.StageCache`
   (``$REPRO_CACHE_DIR`` or ``~/.cache/repro-seg``) under a key of everything that defines it: the
   VQGAN's architecture and initial weights, the Stage-I settings, the data settings and seed. Every
   variant that shares them (the rows of Table 5 with one seed) reuses it without training. It runs
   inside a forked RNG state, so the rest of the run draws the same numbers whether or not the cache
   was hit.
2. **Stage II** for the first ``stage2_steps`` optimizer steps (the Stage-II objective of
   :mod:`lightning_modules.glare_stages`, its parameters only);
3. **Stage III** for the next ``stage3_steps`` (the AFT decoder only, the released loss), when > 0.

One Adam holds three groups (E_c, flow: ``stage2_lr``, E_c weight decay 1e-5; MFD: ``stage3_lr``); a
per-group ``LambdaLR`` gives each group its stage's MultiStepLR (γ 0.5 at 50/75/90/95 % of that stage's
steps) inside its stage and 0 outside it (Adam moves nothing at LR 0). ``trainer.max_steps`` must be
``stage2_steps + stage3_steps``. The chain uses one datamodule for Stages II and III (the full recipes,
``reproduce/configs/glare/stage{1,2,3}_lol.yaml``, give each stage its own crop and batch).

Evaluation: the outputs ``simglare`` (Stage-II latent decoded by the VQGAN) and ``glare`` (after the
AFT, when Stage III ran); ``report_first`` chooses whose metrics are the unprefixed ``test/...`` ones
(Table 5 is built on SimGLARE: ``simglare``).

Single device only (Stage I is trained in-process); under DDP train the stages with their own recipes.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_modules.enhancement import EnhancementTask, multistep_milestones
from lightning_modules.enhancement_losses import GLAREStage3Loss
from lightning_modules.frozen_parts import FrozenPartsInEval
from lightning_modules.glare_cache import StageCache, state_hash
from lightning_modules.glare_stage1 import GlareStage1Module
from lightning_modules.glare_stages import (
    RELEASED_MILESTONES,
    MfdInit,
    check_mfd_init,
    glare_images,
    init_actnorm,
    init_mfd,
    simglare_image,
    stage2_loss,
    stage2_param_groups,
    stage3_loss,
)
from lightning_modules.glare_weights import load_stage1_weights
from lightning_modules.vqgan_losses import VQGANLoss

__all__ = ["GlareChainModule", "phase_factor"]


def phase_factor(step: int, start: int, length: int, fractions: Sequence[float], gamma: float) -> float:
    """LR factor of optimizer step ``step`` for a stage running steps ``[start, start + length)``:
    0 outside, ``gamma ** (milestones passed)`` inside (milestones ``int(f · length)`` of the stage's own steps)."""
    local = step - start
    if length <= 0 or local < 0 or local >= length:
        return 0.0
    return gamma ** sum(local >= m for m in multistep_milestones(length, fractions))


class GlareChainModule(FrozenPartsInEval, EnhancementTask):
    """Stages I (cached) → II → III in one fit (module docstring).

    Args:
        net: :class:`~models.glare.GLARE` (``aft=True`` when ``stage3_steps > 0``).
        stage1_checkpoint: VQGAN weights to start from instead of training Stage I.
        stage1_steps, stage1_lr: the cached Stage-I run (project-defined recipe; Adam betas (0.5, 0.9)).
        stage1_loss: keyword arguments of its :class:`~lightning_modules.vqgan_losses.VQGANLoss`.
        stage1_cache_dir: the cache root (``None``: ``$REPRO_CACHE_DIR`` / ``~/.cache/repro-seg``).
        stage2_steps, stage2_lr, objective, encoder_weight_decay: Stage II (``objective`` ``"nll"`` or ``"l1"``).
        stage3_steps, stage3_lr, stage3_loss: Stage III (0 steps: SimGLARE only).
        lr_milestones, lr_gamma: each stage's MultiStepLR.
        report_first: ``"simglare"`` or ``"glare"``: the output reported as ``test/...``.
        eval_padding, lpips_weights: :class:`~lightning_modules.enhancement.EnhancementTask`.
        flush_denormal: ``torch.set_flush_denormal(True)`` for the process (quick CPU runs; changes only
            values below ~1e-38, which the tiny networks' Adam states reach and the CPU computes slowly).
        complexity_size: ``(H, W)`` at which the runner measures MACs (set as ``net.img_size``, which
            :func:`models.registry.input_size_for` reads); ``None``: the registry's padded LOL size 420 × 620.
        mfd_init: ``"default"`` (the release: PyTorch's initialisation) or ``"vqgan_decoder"`` (project
            extension: the MFD trunk starts as a copy of the Stage-I decoder, :func:`init_mfd`).
        compile, compile_mode: :class:`~lightning_modules.enhancement.EnhancementTask` (Stages II and III;
            the cached Stage-I run is trained in ``setup``, before the switch applies, so it runs eagerly).
    """

    def __init__(self, net: nn.Module, stage1_checkpoint: str | None = None, stage1_steps: int = 200,
                 stage1_lr: float = 1e-3, stage1_loss: dict[str, Any] | None = None,
                 stage1_cache_dir: str | None = None, stage2_steps: int = 200, stage2_lr: float = 5e-4,
                 objective: Literal["nll", "l1"] = "nll", encoder_weight_decay: float = 1e-5,
                 stage3_steps: int = 100, stage3_lr: float = 5e-5, stage3_loss: GLAREStage3Loss | None = None,
                 lr_milestones: Sequence[float] = RELEASED_MILESTONES, lr_gamma: float = 0.5,
                 report_first: Literal["simglare", "glare"] = "glare", eval_padding: str = "release",
                 lpips_weights: str | None = None, flush_denormal: bool = False,
                 complexity_size: Sequence[int] | None = None, mfd_init: MfdInit = "default",
                 compile: bool = False, compile_mode: str | None = None) -> None:
        super().__init__(eval_padding, lpips_weights, compile, compile_mode)
        if objective not in ("nll", "l1"):
            raise ValueError(f"objective must be 'nll' or 'l1', got {objective!r}")
        if objective == "nll" and net.latent_model != "flow":
            raise ValueError("objective='nll' needs the flow; without I-LNF (latent_model='none') use objective='l1'")
        if stage2_steps < 1 or stage3_steps < 0 or stage1_steps < 0:
            raise ValueError(f"need stage2_steps >= 1, stage1_steps >= 0, stage3_steps >= 0; got {stage2_steps}, "
                             f"{stage1_steps}, {stage3_steps}")
        if stage3_steps and not net.aft:
            raise ValueError("stage3_steps > 0 trains the AFT decoder: build the net with aft=True")
        if report_first == "glare" and not stage3_steps:
            raise ValueError("report_first='glare' needs Stage III (stage3_steps > 0)")
        check_mfd_init(mfd_init, net)
        self.save_hyperparameters(ignore=["net", "stage3_loss"])
        self.net = net
        self.objective = objective
        self.stage1_loss_args = dict(stage1_loss or {})  # VQGANLoss(**args), built inside the forked RNG
        self.stage3_loss = stage3_loss if stage3_loss is not None else GLAREStage3Loss()
        self.lr_milestones, self.lr_gamma = tuple(lr_milestones), float(lr_gamma)
        self.stage1_source: str | None = None
        self.stage1_trained = False
        self._phase = 0
        self._actnorm_done = False
        self.net.freeze_for_stage(2)
        if complexity_size is not None:  # read by models.registry.input_size_for (the runner's MACs)
            self.net.img_size = tuple(int(v) for v in complexity_size)
        if flush_denormal:  # process-wide: values below ~1e-38 become 0 on the CPU (tiny nets run ~2x faster)
            torch.set_flush_denormal(True)

    # ------------------------------------------------------------------ Stage I
    def stage1_config(self, datamodule) -> dict[str, Any]:
        """Everything that defines the cached Stage-I weights (the cache key)."""
        data = {k: v for k, v in datamodule.hparams.items()
                if not k.startswith("_") and k not in ("num_workers", "data_check")}
        return {"kind": "glare-stage1", "version": 1, "vqgan_init": state_hash(self.net.vqgan),
                "vqgan": [(n, list(p.shape)) for n, p in self.net.vqgan.state_dict().items()],
                "steps": self.hparams.stage1_steps, "lr": self.hparams.stage1_lr, "loss": self.stage1_loss_args,
                "precision": str(self.trainer.precision), "data_module": type(datamodule).__name__, "data": data}

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.stage1_source is not None:
            return
        if self.hparams.stage1_checkpoint:
            self.stage1_source = load_stage1_weights(self.net, self.hparams.stage1_checkpoint)
        else:
            self._load_cached_stage1()
        rank_zero_info(self.stage1_source)
        init_mfd(self.net, self.hparams.mfd_init)  # a resume's checkpoint then overwrites the copy

    def _load_cached_stage1(self) -> None:
        datamodule = self.trainer.datamodule
        if self.trainer.world_size > 1:
            raise RuntimeError("GlareChainModule trains Stage I in-process on one device; under DDP train Stage I "
                               "first (reproduce/configs/glare/stage1_lol.yaml) and pass stage1_checkpoint")
        cache = StageCache(self.hparams.stage1_cache_dir)
        config = self.stage1_config(datamodule)
        state = cache.load("stage1", config)
        if state is None:
            state = self._train_stage1(datamodule)
            path = cache.save("stage1", config, state)
            self.stage1_trained = True
            self.stage1_source = f"Stage I trained here ({self.hparams.stage1_steps} steps), cached at {path}"
        else:
            self.stage1_source = f"Stage I from the cache {cache.path('stage1', config)}"
        self.net.vqgan.load_state_dict(state)

    def _train_stage1(self, datamodule) -> dict[str, Tensor]:
        seed = int(getattr(datamodule, "seed", 0))
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            loss = VQGANLoss(**self.stage1_loss_args)
            lr = self.hparams.stage1_lr
            module = GlareStage1Module(self.net.vqgan, loss=loss,
                                       optimizer=lambda p: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.9)))
            was = {id(p): p.requires_grad for p in self.net.vqgan.parameters()}
            self.net.freeze_for_stage(1)
            trainer = L.Trainer(max_steps=self.hparams.stage1_steps, accelerator=self.trainer.accelerator,
                                devices=1, precision=self.trainer.precision, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, num_sanity_val_steps=0,
                                default_root_dir=str(StageCache(self.hparams.stage1_cache_dir).root))
            fresh = copy.copy(datamodule)  # its own trainer and datasets; the run's datamodule stays untouched
            fresh.trainer = None
            for split in ("train_dataset", "val_dataset", "test_dataset"):
                if hasattr(fresh, split):
                    setattr(fresh, split, None)
            trainer.fit(module, datamodule=fresh)
            for p in self.net.vqgan.parameters():
                p.requires_grad_(was[id(p)])
            self.net.freeze_for_stage(2)
        random.setstate(py_state)
        np.random.set_state(np_state)
        return {k: v.detach().cpu().clone() for k, v in self.net.vqgan.state_dict().items()}

    # ------------------------------------------------------------------ Stages II and III
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        expected = hp.stage2_steps + hp.stage3_steps
        if self.trainer.max_steps != expected:
            raise ValueError(f"trainer.max_steps must be stage2_steps + stage3_steps = {expected}, "
                             f"got {self.trainer.max_steps}")
        groups = stage2_param_groups(self.net, hp.encoder_weight_decay)
        for group in groups:
            group["lr"] = hp.stage2_lr
        lambdas = [lambda k: phase_factor(k, 0, hp.stage2_steps, self.lr_milestones, self.lr_gamma)] * len(groups)
        if hp.stage3_steps:
            groups.append({"params": [p for _, p in self.net.trainable_parameters(3)], "lr": hp.stage3_lr})
            lambdas.append(lambda k: phase_factor(k, hp.stage2_steps, hp.stage3_steps, self.lr_milestones,
                                                  self.lr_gamma))
        optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), weight_decay=0.0)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": LambdaLR(optimizer, lambdas), "interval": "step", "name": "train/lr"}}

    def _enter(self, phase: int) -> None:
        if self._phase != phase:
            self.net.freeze_for_stage(phase)
            self._phase = phase
            self.train(self.training)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        low, target = batch["image"], batch["target"]
        n = len(low)
        if self.global_step < self.hparams.stage2_steps:
            self._enter(2)
            if not self._actnorm_done:
                init_actnorm(self, self.net, low, target, self.objective)
                self._actnorm_done = True
            loss = stage2_loss(self.net, low, target, self.objective)
            self.log(f"train/stage2_{self.objective}", loss, prog_bar=True, batch_size=n)
            return loss
        self._enter(3)
        terms = stage3_loss(self.net, self.stage3_loss, low, target)
        self.log("train/stage3_loss", terms["loss"], prog_bar=True, batch_size=n)
        return terms["loss"]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glare_chain"] = {"actnorm_done": self._actnorm_done}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._actnorm_done = bool(checkpoint.get("glare_chain", {}).get("actnorm_done", True))

    def enhance(self, low: Tensor) -> dict[str, Tensor]:
        if not self.hparams.stage3_steps:
            return {"simglare": simglare_image(self.net, low)}
        image, nl_image = glare_images(self.net, low)
        outputs = {"glare": image, "simglare": nl_image}
        first = self.hparams.report_first
        return {first: outputs[first], **{k: v for k, v in outputs.items() if k != first}}

    def report_meta(self) -> dict[str, Any]:
        return {**super().report_meta(), "stages": "I (cached) → II → III" if self.hparams.stage3_steps else
                "I (cached) → II", "stage1": self.stage1_source, "objective": self.objective,
                "latent_model": self.net.latent_model, "reported_first": self.hparams.report_first}
