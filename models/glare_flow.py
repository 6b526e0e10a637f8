"""GLARE Stage II: the conditional encoder E_c and the invertible latent normalising flow (I-LNF).

GLARE: Low Light Image Enhancement via Generative Latent Feature based Codebook Retrieval
(Zhou, Dong, Liu, Liu, Min, Zhai, Chen; ECCV 2024; arXiv 2407.12431). Official code:
github.com/LowLevelAI/GLARE @ 7ea5027 (Apache-2.0; re-implemented here from the project's
specification ``shared/papers/glare.md``, no code copied), on the LLFlow/SRFlow code base.

* :class:`ConditionalEncoder` (the release's ``ConEncoder1``, 24,442,583 parameters): the VQGAN
  encoder on the (log-transformed) low-light image, plus ``cond_feat = sigmoid(conv3×3(latent))``
  (64 ch, conditions every coupling) and ``color_map = conv3×3(latent)`` (the prior's mean μ).
* :class:`LatentFlow` (the release's ``FlowUpsamplerNet``, 3,237,636 parameters): on the 3-channel
  latent at H/4, no squeeze, no split; ``L = 2`` levels × (2 steps ActNorm + 1×1 conv, then ``K = 12``
  full steps with the conditional affine coupling) = 28 steps, every one conditioned on ``cond_feat``.
* :class:`GlareStage2` (the release's ``LLFlowVQGAN2``, 27,680,219 = E_c + flow): :meth:`~GlareStage2.nll`
  (training objective, bits per latent pixel) and :meth:`~GlareStage2.enhance_latent` (inference).

Registered: ``glare_stage2`` (the released configuration) and ``glare_stage2_test`` (tiny).

Faithful details and switches:

* ``keep_unused_head=True`` (default) keeps the release's never-called ``Conv2d(320, 384, 3)``
  (``flowUpsamplerNet.f.0``, 1,106,304 parameters) so counts and checkpoints match the release;
  ``False`` drops it (2,131,332 flow parameters).
* ``log_low=True``: E_c sees ``log(clamp(x + 1e-3, min=1e-3))`` (:func:`log_low`), as released.
* ``train_gt_ratio=0.2``: in train mode the prior mean is the ground-truth latent itself with this
  probability (one draw per call, i.e. per batch, as LLFlow's ``random.random()``; from torch's
  generator here), else ``color_map``. In eval mode the mean is always ``color_map`` (the release
  draws in eval too; we make evaluation NLL deterministic). ``nll(..., use_gt_mean=)`` forces either.
* No dequantisation noise is added to the latent (the released Stage-II configuration).
* ``enhance_latent(low, heat=0)`` is the released inference (z = μ); ``heat > 0`` samples
  ``z = μ + heat·ε`` (a project extension: the release only runs heat 0).
* Codebook retrieval is left to the caller: pass the returned latent to the VQGAN quantiser
  (``models.layers.vector_quantizer``) and decoder.
* :meth:`GlareStage2.latent_regression_loss` is the release's ``weight_l1`` term (Table 5 row (1)).
* ActNorm's data-dependent initialisation runs on the first training forward (release behaviour);
  :meth:`GlareStage2.initialize_actnorm` runs it explicitly (e.g. on the same batch on every DDP rank).
  Under DDP the unused head receives no gradient: use ``keep_unused_head=False`` or
  ``find_unused_parameters=True``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from models.layers.flow import ActNorm2d, FlowStep
from models.layers.vqgan_blocks import VQGANEncoder
from models.registry import register_model

__all__ = [
    "ConditionOutput",
    "ConditionalEncoder",
    "GlareStage2",
    "LatentFlow",
    "convert_official_state_dict",
    "glare_stage2",
    "glare_stage2_test",
    "log_low",
    "official_key",
]

#: The release's never-used flow head ``f.0``: Conv2d(320 → 384, 3×3) (its shape, not derived from the config).
UNUSED_HEAD_SHAPE = (320, 384, 3)


def log_low(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The release's ``log_low`` input transform ``log(clamp(x + eps, min=eps))``; ``x``: ``(B, 3, H, W)`` in [0, 1]."""
    return torch.log(torch.clamp(x + eps, min=eps))


class ConditionOutput(NamedTuple):
    """What E_c gives: ``cond_feat`` ``(B, 64, H/4, W/4)``, ``color_map`` ``(B, 3, H/4, W/4)`` and ``mid_feats``
    ``[(B, 128, H, W), (B, 256, H/2, W/2)]`` (the encoder's features before each downsampling, for Stage III)."""

    cond_feat: torch.Tensor
    color_map: torch.Tensor
    mid_feats: list[torch.Tensor]


class ConditionalEncoder(nn.Module):
    """E_c (``ConEncoder1``): VQGAN encoder → 3-ch latent → ``cond_feat`` and ``color_map`` heads.

    ``x``: ``(B, 3, H, W)`` (already ``log_low``-transformed when the release does so) → :class:`ConditionOutput`.
    Names equal the release's (``encoder.*``, ``color_conv``, ``cond_conv.0``); PyTorch default init.
    """

    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, in_channels: int = 3,
                 resolution: int = 256, z_channels: int = 3, cond_channels: int = 64) -> None:
        super().__init__()
        self.encoder = VQGANEncoder(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                                    attn_resolutions=attn_resolutions, dropout=dropout, in_channels=in_channels,
                                    resolution=resolution, z_channels=z_channels, double_z=False)
        self.color_conv = nn.Conv2d(z_channels, z_channels, 3, padding=1)
        self.cond_conv = nn.Sequential(nn.Conv2d(z_channels, cond_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> ConditionOutput:
        latent, mid_feats = self.encoder(x, return_features=True)
        return ConditionOutput(self.cond_conv(latent), self.color_conv(latent), mid_feats)


class LatentFlow(nn.Module):
    """The I-LNF (``FlowUpsamplerNet``): ``L × (n_additional + K)`` :class:`~models.layers.flow.FlowStep` s.

    ``forward(y, cond)``: latent ``y`` ``(B, C, h, w)`` → ``(z, logdet)`` (normalising direction, steps
    0 … N−1); ``inverse(z, cond)`` runs them back (N−1 … 0). ``cond``: ``(B, cond_channels, h, w)``, the
    same for every step; ``logdet``: ``(B,)``.
    """

    def __init__(self, channels: int = 3, cond_channels: int = 64, hidden_channels: int = 64, K: int = 12,
                 L: int = 2, n_additional: int = 2, actnorm_scale: float = 1.0, affine_eps: float = 1e-4,
                 keep_unused_head: bool = True) -> None:
        super().__init__()
        self.steps = nn.ModuleList()
        for _ in range(L):
            for i in range(n_additional + K):
                self.steps.append(FlowStep(channels, cond_channels, hidden_channels, coupling=i >= n_additional,
                                           actnorm_scale=actnorm_scale, affine_eps=affine_eps))
        cin, cout, k = UNUSED_HEAD_SHAPE
        # built and counted by the release, never called (no effect on any output)
        self.unused_head = nn.Conv2d(cin, cout, k, padding=k // 2) if keep_unused_head else None

    def forward(self, y: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = y
        for step in self.steps:
            z, logdet = step(z, cond, logdet)
        return z, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor,
                logdet: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = z
        for step in reversed(self.steps):
            y, logdet = step.inverse(y, cond, logdet)
        return y, logdet


class GlareStage2(nn.Module):
    """GLARE Stage II (``LLFlowVQGAN2``): E_c + I-LNF on the VQGAN latent (f = 4, 3 channels).

    ``low``: ``(B, 3, H, W)`` low-light image in [0, 1], H and W divisible by 4; ``gt_latent``:
    ``(B, 3, H/4, W/4)``, the frozen VQGAN encoder's continuous (pre-quantisation) latent of the
    normal-light image. ``forward(low)`` = :meth:`enhance_latent`.
    """

    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, resolution: int = 256,
                 z_channels: int = 3, cond_channels: int = 64, hidden_channels: int = 64, K: int = 12, L: int = 2,
                 n_additional: int = 2, actnorm_scale: float = 1.0, affine_eps: float = 1e-4,
                 keep_unused_head: bool = True, log_low: bool = True, train_gt_ratio: float = 0.2) -> None:
        super().__init__()
        self.cond_encoder = ConditionalEncoder(ch, ch_mult, num_res_blocks, attn_resolutions, dropout, 3,
                                               resolution, z_channels, cond_channels)
        self.flow = LatentFlow(z_channels, cond_channels, hidden_channels, K, L, n_additional, actnorm_scale,
                               affine_eps, keep_unused_head)
        self.log_low = log_low
        self.train_gt_ratio = train_gt_ratio
        self.downscale = 2 ** (len(ch_mult) - 1)

    def condition(self, low: torch.Tensor) -> ConditionOutput:
        """E_c on ``low`` ``(B, 3, H, W)`` (after :func:`log_low` when enabled)."""
        return self.cond_encoder(log_low(low) if self.log_low else low)

    def nll(self, low: torch.Tensor, gt_latent: torch.Tensor, use_gt_mean: bool | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample NLL in bits per latent pixel, ``(B,)``; the Stage-II loss is its batch mean.

        ``−[log|det ∂f/∂y| + log N(f(y); μ, I)] / (ln 2 · h · w)``, the Gaussian summed over the C·h·w
        latent elements (with its ``½ log 2π`` constant). ``μ = color_map`` or, with probability
        ``train_gt_ratio`` in train mode (``use_gt_mean=None``), ``μ = gt_latent``.
        """
        cond = self.condition(low)
        z, logdet = self.flow(gt_latent, cond.cond_feat)
        if use_gt_mean is None:
            use_gt_mean = self.training and bool(torch.rand((), generator=generator) < self.train_gt_ratio)
        mean = gt_latent if use_gt_mean else cond.color_map
        log_p = (-0.5 * (math.log(2 * math.pi) + (z - mean) ** 2)).flatten(1).sum(1)
        pixels = gt_latent.shape[2] * gt_latent.shape[3]
        return -(logdet + log_p) / (math.log(2.0) * pixels)

    def enhance_latent(self, low: torch.Tensor, heat: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """NL-aligned latent ``f⁻¹(z; cond)`` ``(B, 3, H/4, W/4)`` with ``z = μ(low) + heat·ε`` (released: heat 0).

        The result goes to the VQGAN quantiser (codebook retrieval) and decoder, done by the caller.
        """
        cond = self.condition(low)
        z = cond.color_map
        if heat:
            device = generator.device if generator is not None else z.device
            z = z + heat * torch.randn(z.shape, generator=generator, device=device).to(z)
        return self.flow.inverse(z, cond.cond_feat)[0]

    @torch.no_grad()
    def initialize_actnorm(self, low: torch.Tensor, gt_latent: torch.Tensor) -> int:
        """Run the flow's data-dependent ActNorm initialisation now, on one batch, as the first training
        :meth:`nll` would (mean μ(LL)); returns how many ActNorms it initialised (0 after loading weights).

        Under DDP call it with the same batch on every rank: ranks initialising on their own batches diverge.
        """
        norms = [m for m in self.flow.modules() if isinstance(m, ActNorm2d)]
        fresh = sum(not m.inited and not bool((m.bias != 0).any()) for m in norms)
        was_training = self.training
        self.train()
        self.nll(low, gt_latent, use_gt_mean=False)
        self.train(was_training)
        return fresh

    def latent_regression_loss(self, low: torch.Tensor, gt_latent: torch.Tensor) -> torch.Tensor:
        """The release's ``weight_l1`` term: ``mean|ŷ − y| + mean((ŷ − y)²)``, ŷ the heat-0 inverse (a scalar)."""
        diff = self.enhance_latent(low) - gt_latent
        return diff.abs().mean() + diff.pow(2).mean()

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        return self.enhance_latent(low)


# ------------------------------------------------------------------------------------------------ conversion
_STEP_TO_OFFICIAL = ((".coupling.feature_affine.net.", ".affine.fFeatures."),
                     (".coupling.self_affine.net.", ".affine.fAffine."))


def official_flow_key(key: str) -> str:
    """Our :class:`LatentFlow` key → the release's ``FlowUpsamplerNet`` key (``steps.i`` → ``layers.i``, ...)."""
    if key.startswith("unused_head."):
        return "f.0." + key.removeprefix("unused_head.")
    if not re.match(r"steps\.\d+\.", key):
        raise KeyError(f"no official counterpart for LatentFlow key {key!r}")
    return official_step_key("layers" + key.removeprefix("steps"))


def official_step_key(key: str) -> str:
    """Our :class:`~models.layers.flow.FlowStep` key (or a key containing one) → the release's ``FlowStep`` key."""
    key = "." + key
    for ours, theirs in _STEP_TO_OFFICIAL:
        key = key.replace(ours, theirs)
    return key[1:]


def official_key(model: nn.Module, key: str) -> str:
    """Our key of ``model`` (GlareStage2, LatentFlow, ConditionalEncoder or FlowStep) → the release's."""
    if isinstance(model, GlareStage2):
        if key.startswith("cond_encoder."):
            return "RRDB." + key.removeprefix("cond_encoder.")
        return "flowUpsamplerNet." + official_flow_key(key.removeprefix("flow."))
    if isinstance(model, LatentFlow):
        return official_flow_key(key)
    if isinstance(model, FlowStep):
        return official_step_key(key)
    if isinstance(model, ConditionalEncoder):
        return key
    raise TypeError(f"no official layout for {type(model).__name__}")


def convert_official_state_dict(state: dict[str, torch.Tensor], model: nn.Module,
                                strict: bool = True) -> dict[str, torch.Tensor]:
    """A released state dict (``module.`` prefixes allowed) → ``model``'s keys.

    The release's unused flow head (``f.0.*``) is dropped when ``model`` was built without it. With
    ``strict`` any other official key without a counterpart raises ``KeyError``; ``strict=False``
    ignores them (e.g. the Stage-III decoder's keys in a Stage-III ``net_G.pth``).
    """
    inverse = {official_key(model, k): k for k in model.state_dict()}
    out, unknown = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in inverse:
            out[inverse[key]] = value
        elif not re.match(r"(flowUpsamplerNet\.)?f\.0\.", key):
            unknown.append(key)
    if strict and unknown:
        raise KeyError(f"official keys without a counterpart in {type(model).__name__}: {sorted(unknown)[:5]}")
    return out


# ------------------------------------------------------------------------------------------------ registry
@register_model(input_size=(3, 420, 620), paper="glare", task="enhancement")
def glare_stage2(**kwargs) -> GlareStage2:
    """The released Stage II (``LLFlowVQGAN2``, ``confs/train_stage2_LOL.yml``): 27,680,219 parameters."""
    return GlareStage2(**kwargs)


@register_model(input_size=(3, 32, 32), paper="glare", task="enhancement")
def glare_stage2_test(**kwargs) -> GlareStage2:
    """Tiny Stage II: E_c ch 32 × (1, 1, 2), 1 block, attention at 8²; flow K = 2, L = 1, 1 extra step, width 16."""
    options = dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=32,
                   cond_channels=16, hidden_channels=16, K=2, L=1, n_additional=1, keep_unused_head=False)
    return GlareStage2(**{**options, **kwargs})
