"""GLARE, the whole network: Stage III / inference (the release's ``VQLLFLOWDeformable`` + its VQGAN), of

    Zhou et al., "GLARE: Low Light Image Enhancement via Generative Latent Feature based
    Codebook Retrieval", ECCV 2024, arXiv 2407.12431.

Official code: github.com/LowLevelAI/GLARE @ 7ea5027 (``code/models/modules/VQLLFLOWDeformable_arch.py``,
``code/models/VQLLFLOWD_model.py``; Apache-2.0 per the project's specification). Re-implemented from
``shared/papers/glare.md`` §2.1–2.6 and its addenda; no code copied.

:class:`GLARE` composes the parts built in their own files, under names that make the release's state
dicts a rename (:func:`official_key`):

* ``stage2``: :class:`~models.glare_flow.GlareStage2` = E_c (release ``RRDB.*``) + I-LNF
  (``flowUpsamplerNet.*``), 27,680,219 parameters;
* ``deformable_decoder``: :class:`~models.glare_decoder.MultiScaleDecoder` (``deformable_decoder.*``, the MFD
  with the adaptive mix and the deformable warps), 44,035,040;
* ``vqgan``: :class:`~models.glare_vqgan.GlareVQGAN` (the release's separate ``vqgan.pkl``), 62,907,614.

Registered ``glare`` = 134,622,873 parameters (the release's netG 71,715,259 + VQGAN), at 3×420×620: a LOL
600×400 image after the release's evaluation padding (20 px bottom and left, in
``lightning_modules.enhancement_inference``, which is the caller's); the parts are registered at the same
image size (the MFD at its 105×155 latent), so the benchmark times each stage as evaluated.
``unused_layers=False`` drops every part's dead weights (125,856,726). ``glare_test`` is the tiny composition
of the parts' ``*_test`` configurations.

Inference (:meth:`GLARE.stage3_outputs`, ``low: (B, 3, H, W)`` in [0, 1], H and W multiples of 4):

1. E_c on ``log_low(low)`` → ``cond_feat (B, 64, H/4, W/4)``, ``color_map`` μ ``(B, 3, H/4, W/4)``,
   ``mid_feats [(B, 128, H, W), (B, 256, H/2, W/2)]``;
2. inverse flow from z = μ (heat 0) → the NL-aligned latent ŷ ``(B, 3, H/4, W/4)``;
3. codebook retrieval: the VQGAN quantiser on ŷ, ``post_quant_conv`` and decoder → its image (discarded by
   the release) and features ``v1 (B, 256, H/2, W/2)``, ``v0 (B, 128, H, W)``;
4. the MFD on the **un-quantised** ŷ, fusing v1/v0 (deformable warp) and mid_feats (adaptive mix) → image.

Training: :meth:`GLARE.freeze_for_stage` / :meth:`GLARE.trainable_parameters` give the released trainable
sets (§3): Stage I the VQGAN (its VGG slice stays frozen), Stage II E_c + flow, Stage III the MFD only (every
MFD parameter, its never-run layers included: 44,035,040, as released). A new model starts with the set of
``trainable_stage`` (default: 3, the release's ``fix_modules=['RRDB', 'flowUpsamplerNet']``; 2 when ``aft=False``).

Switches (defaults = the release):

* ``aft`` (True): False gives SimGLARE (Table 4; the Stage-II inference of ``test_stage2.py``): the image is the
  VQGAN decoder's, no MFD is built.
* ``latent_model`` ("flow"): "none" is Table 5 row (3), "without I-LNF", **project-defined** (the paper gives
  only the deltas): the latent is E_c's conditional-mean head ``color_map`` itself, regressed onto the NL latent
  with :meth:`GLARE.latent_regression_loss` (the release's ``weight_l1`` form, mean L1 + MSE). The flow's
  weights stay built (Stage-II checkpoints load) but never run and are not trained (nor is ``cond_conv``).
  Table 5 builds on SimGLARE: ``GLARE(latent_model="none", aft=False)``.
* ``include_vqgan`` (True): False builds the release's netG form (``glare/stage3`` manifest, 71,715,259); it
  cannot run alone.
* ``mix``, ``user_beta`` (not from the paper), ``ratio_eps``, ``mix_init``: see :mod:`models.glare_decoder`;
  ``log_low``, ``train_gt_ratio``: see :mod:`models.glare_flow`; ``heat > 0`` in :meth:`GLARE.stage3_outputs`
  samples ``z = μ + heat·ε`` (project extension, the release runs heat 0).

Deviations: the release moves tensors to ``cuda:0`` and relies on DataParallel (``.module``); here everything
is device-agnostic (spec §6 #6). Its dead ``rrdbPreprocessing`` / ``normal_flow`` paths are omitted (§6 #7). The
parts' own deviations are listed in their files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from models.glare_decoder import MultiScaleDecoder
from models.glare_decoder import convert_official_state_dict as convert_decoder_state
from models.glare_flow import ConditionOutput, GlareStage2
from models.glare_flow import convert_official_state_dict as convert_stage2_state
from models.glare_flow import official_key as stage2_official_key
from models.glare_vqgan import GlareVQGAN, load_released_vqgan
from models.glare_vqgan import convert_official_state_dict as convert_vqgan_state
from models.registry import register_model

__all__ = [
    "GLARE",
    "GlareOutputs",
    "LATENT_MODELS",
    "STAGES",
    "convert_official_state_dict",
    "official_key",
    "official_state_dicts",
    "glare",
    "glare_test",
]

LATENT_MODELS = ("flow", "none")
STAGES = (1, 2, 3)
_NET_G_DECODER = "deformable_decoder."


class GlareOutputs(NamedTuple):
    """What one GLARE pass gives.

    ``image (B, 3, H, W)``: the enhanced image (the MFD's; the VQGAN decoder's when ``aft=False``);
    ``latent (B, 3, H/4, W/4)``: ŷ, the un-quantised latent (flow output, or ``color_map`` without I-LNF);
    ``nl_image (B, 3, H, W)``: the VQGAN decoder's image from the retrieved codes (SimGLARE's output);
    ``codebook_loss``: the quantiser's scalar loss on ŷ (not used by the released Stage III loss).
    """

    image: torch.Tensor
    latent: torch.Tensor
    nl_image: torch.Tensor
    codebook_loss: torch.Tensor


class GLARE(nn.Module):
    """The GLARE network (``VQLLFLOWDeformable`` + VQGAN). ``forward(low: (B, 3, H, W)) → (B, 3, H, W)``.

    The architecture arguments are shared by the three parts, as in the release (E_c, MFD and VQGAN all
    use ch 128, ch_mult (1, 2, 4), 2 blocks, attention at 64, z 3); ``n_embed``/``beta`` are the codebook's,
    ``cond_channels`` … ``n_additional`` the flow's.
    """

    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, resolution: int = 256,
                 z_channels: int = 3, n_embed: int = 8192, beta: float = 0.25, cond_channels: int = 64,
                 hidden_channels: int = 64, K: int = 12, L: int = 2, n_additional: int = 2, log_low: bool = True,
                 train_gt_ratio: float = 0.2, mix_init: Sequence[float] = (-1.0, -0.6), deformable_groups: int = 4,
                 mix: str = "adaptive", user_beta: float = 1.0, ratio_eps: float = 0.0, latent_model: str = "flow",
                 aft: bool = True, include_vqgan: bool = True, unused_layers: bool = True,
                 trainable_stage: int | None = None) -> None:
        super().__init__()
        if latent_model not in LATENT_MODELS:
            raise ValueError(f"latent_model must be one of {LATENT_MODELS}, got {latent_model!r}")
        arch = dict(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                    attn_resolutions=tuple(attn_resolutions), dropout=dropout, resolution=resolution,
                    z_channels=z_channels)
        self.latent_model, self.aft, self.unused_layers = latent_model, aft, unused_layers
        self.downscale = 2 ** (len(ch_mult) - 1)
        self.stage2 = GlareStage2(**arch, cond_channels=cond_channels, hidden_channels=hidden_channels, K=K, L=L,
                                  n_additional=n_additional, keep_unused_head=unused_layers, log_low=log_low,
                                  train_gt_ratio=train_gt_ratio)
        self.deformable_decoder = (
            MultiScaleDecoder(**arch, mix_init=tuple(mix_init), deformable_groups=deformable_groups, mix=mix,
                              user_beta=user_beta, ratio_eps=ratio_eps, unused_layers=unused_layers)
            if aft else None)
        self.vqgan = (GlareVQGAN(**arch, n_embed=n_embed, embed_dim=z_channels, beta=beta,
                                 unused_layers=unused_layers) if include_vqgan else None)
        stage = trainable_stage if trainable_stage is not None else (3 if aft else 2)
        self.freeze_for_stage(stage)

    # -------------------------------------------------------------------------------------------- inference
    def check_input(self, low: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``low`` is ``(B, 3, H, W)`` with H, W multiples of the downscale (4)."""
        if low.ndim != 4 or low.shape[1] != 3:
            raise ValueError(f"GLARE expects a (B, 3, H, W) image batch, got shape {tuple(low.shape)}")
        h, w = low.shape[-2:]
        f = self.downscale
        if h % f or w % f:
            raise ValueError(
                f"GLARE needs H and W divisible by {f}, got {h}x{w} (H x W); pad first, e.g. with "
                "lightning_modules.enhancement_inference.run_padded (GLARE_RELEASE_PADDING as the release, "
                "or padding_to_multiple)")

    def condition(self, low: torch.Tensor) -> ConditionOutput:
        """E_c on ``low (B, 3, H, W)`` (after ``log_low``) → ``cond_feat``, ``color_map``, ``mid_feats``."""
        self.check_input(low)
        return self.stage2.condition(low)

    def latent_from_condition(self, cond: ConditionOutput, heat: float = 0.0,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """ŷ ``(B, 3, H/4, W/4)`` from E_c's outputs: ``f⁻¹(μ + heat·ε; cond_feat)``, or ``μ`` without I-LNF."""
        mean = cond.color_map
        if self.latent_model == "none":
            if heat:
                raise ValueError("heat sampling needs the flow (latent_model='flow')")
            return mean
        if heat:  # project extension; the release runs heat 0 (as GlareStage2.enhance_latent)
            device = generator.device if generator is not None else mean.device
            mean = mean + heat * torch.randn(mean.shape, generator=generator, device=device).to(mean)
        return self.stage2.flow.inverse(mean, cond.cond_feat)[0]

    def latent(self, low: torch.Tensor, heat: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """ŷ ``(B, 3, H/4, W/4)`` for ``low (B, 3, H, W)`` (Stage-II inference before codebook retrieval)."""
        return self.latent_from_condition(self.condition(low), heat, generator)

    def stage3_outputs(self, low: torch.Tensor, heat: float = 0.0,
                       generator: torch.Generator | None = None) -> GlareOutputs:
        """One pass on ``low (B, 3, H, W)`` in [0, 1] → :class:`GlareOutputs` (the Stage-III loss uses ``image``)."""
        if self.vqgan is None:
            raise RuntimeError("this GLARE has no VQGAN (include_vqgan=False, the release's netG form); build it "
                               "with include_vqgan=True and load vqgan.pkl to run it")
        cond = self.condition(low)
        latent = self.latent_from_condition(cond, heat, generator)
        nl_image, codebook_loss, nl_feats = self.vqgan.decode(latent)  # codebook retrieval + frozen NL decoder
        image = self.deformable_decoder(latent, nl_feats, cond.mid_feats) if self.aft else nl_image
        return GlareOutputs(image, latent, nl_image, codebook_loss)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        """``low (B, 3, H, W)`` in [0, 1], H and W multiples of 4 → enhanced ``(B, 3, H, W)`` (heat 0)."""
        return self.stage3_outputs(low).image

    def compile_parts(self) -> dict[str, nn.Module]:
        """The parts whose ``forward`` does the work, for the recipes' compile switch (the stages call
        them through methods, not through :meth:`forward`): E_c, the flow's normalising direction, the
        MFD and the VQGAN's encoder and decoder (the codebook lookup and the flow's inverse stay eager)."""
        parts = {"stage2.cond_encoder": self.stage2.cond_encoder, "stage2.flow": self.stage2.flow,
                 "deformable_decoder": self.deformable_decoder}
        if self.vqgan is not None:
            parts.update({"vqgan.encoder": self.vqgan.encoder, "vqgan.decoder": self.vqgan.decoder})
        return {name: module for name, module in parts.items() if module is not None}

    # -------------------------------------------------------------------------------------------- training
    def gt_latent(self, normal: torch.Tensor) -> torch.Tensor:
        """The VQGAN encoder's continuous latent of the normal-light image: ``(B, 3, H, W) → (B, 3, H/4, W/4)``."""
        if self.vqgan is None:
            raise RuntimeError("gt_latent needs the VQGAN (include_vqgan=True)")
        self.check_input(normal)
        return self.vqgan.encode(normal)

    def nll(self, low: torch.Tensor, gt_latent: torch.Tensor, **kwargs) -> torch.Tensor:
        """The Stage-II NLL ``(B,)`` in bits per latent pixel (:meth:`GlareStage2.nll`); needs the flow."""
        if self.latent_model != "flow":
            raise ValueError("the NLL objective needs the flow (latent_model='flow')")
        self.check_input(low)
        return self.stage2.nll(low, gt_latent, **kwargs)

    def latent_regression_loss(self, low: torch.Tensor, gt_latent: torch.Tensor) -> torch.Tensor:
        """``mean|ŷ − y| + mean((ŷ − y)²)``, ŷ the heat-0 latent (Table 5 rows (1) and, without I-LNF, (3))."""
        if self.latent_model == "flow":
            self.check_input(low)
            return self.stage2.latent_regression_loss(low, gt_latent)
        diff = self.latent(low) - gt_latent
        return diff.abs().mean() + diff.pow(2).mean()

    def trainable_parameters(self, stage: int) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs the release trains in ``stage`` (1, 2 or 3); changes nothing.

        Stage I: the VQGAN but its frozen VGG slice; Stage II: E_c + flow (E_c's encoder and ``color_conv``
        only when ``latent_model="none"``); Stage III: the whole MFD.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage == 1:
            if self.vqgan is None:
                raise ValueError("stage 1 trains the VQGAN, which this model does not hold (include_vqgan=False)")
            return [(f"vqgan.{n}", p) for n, p in self.vqgan.named_parameters()
                    if not n.startswith("vgg_feat_extractor.")]
        if stage == 2:
            if self.latent_model == "flow":
                prefixes = ("",)
            else:
                prefixes = ("cond_encoder.encoder.", "cond_encoder.color_conv.")
            return [(f"stage2.{n}", p) for n, p in self.stage2.named_parameters() if n.startswith(prefixes)]
        if self.deformable_decoder is None:
            raise ValueError("stage 3 trains the MFD, which SimGLARE (aft=False) does not have")
        return [(f"{_NET_G_DECODER}{n}", p) for n, p in self.deformable_decoder.named_parameters()]

    def freeze_for_stage(self, stage: int) -> list[nn.Parameter]:
        """Set ``requires_grad`` to exactly :meth:`trainable_parameters` of ``stage``; returns those parameters."""
        trainable = self.trainable_parameters(stage)
        chosen = {id(p) for _, p in trainable}
        for p in self.parameters():
            p.requires_grad_(id(p) in chosen)
        return [p for _, p in trainable]

    # -------------------------------------------------------------------------------------------- weights
    def load_released(self, net_g_path: str | Path | None = None, vqgan_path: str | Path | None = None) -> list[str]:
        """Load the authors' files (given by the user; nothing is downloaded); returns the parts loaded.

        ``net_g_path``: a Stage-III ``net_G.pth`` (E_c, flow, MFD) or a Stage-II ``*_G.pth`` (E_c + flow; the MFD
        is then left as it is, as the release's Stage-III start from Stage II). ``vqgan_path``: ``vqgan.pkl``
        (:func:`models.glare_vqgan.load_released_vqgan`). Every weight of a part present in a file must be there.
        """
        loaded = []
        if net_g_path is not None:
            path = Path(net_g_path)
            if not path.is_file():
                raise FileNotFoundError(f"released GLARE generator weights not found: {path}")
            state = convert_official_state_dict(torch.load(path, map_location="cpu", weights_only=True), self)
            parts = ["stage2"] + (["deformable_decoder"] if any(k.startswith(_NET_G_DECODER) for k in state) else [])
            missing, _ = self.load_state_dict(state, strict=False)
            missing = [k for k in missing if k.split(".")[0] in parts]
            if missing:
                raise KeyError(f"{path}: missing weights {missing[:5]} ({len(missing)} in all)")
            loaded += parts
        if vqgan_path is not None:
            if self.vqgan is None:
                raise ValueError("this GLARE has no VQGAN (include_vqgan=False)")
            load_released_vqgan(vqgan_path, self.vqgan)
            loaded.append("vqgan")
        return loaded

    @classmethod
    def from_released(cls, net_g_path: str | Path, vqgan_path: str | Path | None = None, **kwargs) -> GLARE:
        """``cls(**kwargs)`` with :meth:`load_released` applied."""
        model = cls(**kwargs)
        model.load_released(net_g_path, vqgan_path)
        return model


# ------------------------------------------------------------------------------------------------ conversion
def official_key(model: GLARE, key: str) -> str:
    """Our GLARE key → the release's: netG names (``RRDB.*``, ``flowUpsamplerNet.*``, ``deformable_decoder.*``)
    for the generator, ``vqgan.pkl`` names for ``vqgan.*`` (the release keeps the VQGAN in its own file)."""
    part, _, rest = key.partition(".")
    if part == "stage2":
        return stage2_official_key(model.stage2, rest)
    if part == "deformable_decoder":
        return key
    if part == "vqgan":
        return rest
    raise KeyError(f"no official counterpart for GLARE key {key!r}")


def official_state_dicts(model: GLARE) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Our state dict in the release's layout: ``(net_G state, vqgan.pkl state or None)``."""
    net_g, vqgan = {}, {}
    for key, value in model.state_dict().items():
        (vqgan if key.startswith("vqgan.") else net_g)[official_key(model, key)] = value
    return net_g, (vqgan if model.vqgan is not None else None)


def _unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "params"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_official_state_dict(state: dict[str, torch.Tensor], model: GLARE,
                                vqgan_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Released ``net_G`` state (Stage III, or Stage II without ``deformable_decoder.*``) and optionally the
    ``vqgan.pkl`` state → our keys. Dead-weight keys are dropped for a model built without them; any other
    key without a counterpart raises ``KeyError`` (the parts' converters)."""
    state = _unwrap(state)
    decoder = {k: v for k, v in state.items() if k.startswith(_NET_G_DECODER)}
    out = {f"stage2.{k}": v for k, v in
           convert_stage2_state({k: v for k, v in state.items() if k not in decoder}, model.stage2).items()}
    if decoder:
        if model.deformable_decoder is None:
            raise KeyError("the state has Stage-III decoder weights, but this GLARE has no MFD (aft=False)")
        converted = convert_decoder_state(decoder, model.deformable_decoder)
        out.update({f"{_NET_G_DECODER}{k}": v for k, v in converted.items()})
    if vqgan_state is not None:
        if model.vqgan is None:
            raise KeyError("a VQGAN state was given, but this GLARE has no VQGAN (include_vqgan=False)")
        out.update({f"vqgan.{k}": v for k, v in convert_vqgan_state(vqgan_state, model.vqgan).items()})
    return out


# ------------------------------------------------------------------------------------------------ registry
@register_model(input_size=(3, 420, 620), paper="glare", task="enhancement")
def glare(**kwargs) -> GLARE:
    """The released GLARE (LOL): E_c + flow + MFD + VQGAN, 134,622,873 parameters (44,035,040 trainable, the MFD);
    125,856,726 with ``unused_layers=False``."""
    return GLARE(**kwargs)


@register_model(input_size=(3, 32, 48), paper="glare", task="enhancement")
def glare_test(**kwargs) -> GLARE:
    """Tiny GLARE of the parts' ``*_test`` configurations (E_c at ``ch_mult (1, 2, 4)`` to fit the MFD)."""
    config = dict(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(8,), resolution=32, n_embed=64,
                  cond_channels=16, hidden_channels=16, K=2, L=1, n_additional=1, unused_layers=False)
    return GLARE(**{**config, **kwargs})
