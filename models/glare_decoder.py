"""GLARE Stage III: the multi-scale fusion decoder (MFD) with adaptive mix blocks and deformable warps, of

    Zhou et al., "GLARE: Low Light Image Enhancement via Generative Latent Feature based
    Codebook Retrieval", ECCV 2024, arXiv 2407.12431 (§3.3, "adaptive feature transformation").

Official code: github.com/LowLevelAI/GLARE @ 7ea5027 (``code/models/modules/deformableDecoder_arch.py``:
``MultiScaleDecoder2``, ``WarpBlock``, ``DCNv2Pack``, ``Mix``; Apache-2.0 per the project's specification).
Re-implemented from ``shared/papers/glare.md`` §2.4–2.5; parameter names equal the release's (in a
Stage-III ``net_G`` checkpoint they sit under ``deformable_decoder.``).

:class:`MultiScaleDecoder` (registered ``glare_decoder``: 44,035,040 parameters, equal to the release)
mirrors the VQGAN decoder (ch 128, ch_mult (1, 2, 4), 3 ResNet blocks per level, attention at the H/4
level and in the middle) and decodes the **un-quantised** flow output ``z: (B, 3, H/4, W/4)``. After the
blocks of each level but the lowest (``C = 256`` at H/2, then ``C = 128`` at H):

1. adaptive mix (Eq. 5, :class:`AdaptiveMix`): ``h ← s·e + (1 − s)·h``, ``s = sigmoid(w)``, ``e`` the
   conditional encoder's feature at that scale, ``w`` a learned scalar initialised to −1.0 (H/2) and −0.6 (H);
2. deformable warp (Eq. 4, :class:`WarpBlock`): ``x = conv3×3([v, h])`` (2C → C), ``v_warp = DCNv2(v)`` with
   offsets/masks predicted from ``x`` (3×3, 4 deformable groups, zero-initialised predictor), ``v`` the frozen
   normal-light decoder's feature at that scale;
3. ``h ← h + v_warp · mean(h) / mean(v_warp)``: one global ratio of whole-tensor means (over the batch too).

Output: GroupNorm → swish → ``residual_conv`` (3×3, 128 → 3): the enhanced image (no residual to the input).

Layers the release builds but never runs, kept by default so the count matches (``unused_layers=False``
drops them, −5,333,251 parameters): ``conv_out`` (the mirrored decoder's own 128 → 3 head), ``scale`` and
``bias`` (2 × conv–LeakyReLU–conv–Sigmoid each) and ``enc`` (2 ResBlocks 2C → C with a ``conv_out`` shortcut).

Switches and deviations:

* :meth:`MultiScaleDecoder.init_from_decoder` (project extension, not in the release, which starts the MFD from
  PyTorch's defaults): copy a VQGAN decoder into the mirrored trunk (``conv_in``, ``mid``, ``up``, ``norm_out``;
  its ``conv_out`` into ``residual_conv``). The stage modules' ``mfd_init: vqgan_decoder`` uses it; the quick
  tables do, so that a few dozen Stage-III steps learn.
* ``ratio_eps`` (default 0, faithful): a guard for the fragile mean ratio (spec §6 #9), added to
  ``|mean(v_warp)|`` keeping its sign.
* ``mix``: ``"adaptive"`` (the release), ``"skip"`` (``h ← h + e``, the Table-4 "skip connection" variant;
  its exact form is unpublished, project-defined) or ``"none"`` (no LL-feature injection).
* ``user_beta`` (default 1.0 = the release): the paper's user coefficient β does not exist in the code;
  project extension (not from the paper) scaling the mix weight, ``s = β·sigmoid(w)``.
* The release hard-codes the fused levels ("every level but index 2") and the widths of ``warp``,
  ``scale``, ``bias``, ``enc`` (ch·2 and ch, 256/128, 512/256); here they follow ``ch·ch_mult`` of the levels
  below the lowest (identical for the released configuration). The release moves the features to
  ``cuda`` and casts ``h``/``v`` to float32 before the fusion; here the fusion runs in float32 on any device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.layers.deformable import ModulatedDeformConv2d
from models.layers.vqgan_blocks import Normalize, build_decoder_trunk, swish
from models.registry import register_model

__all__ = [
    "AdaptiveMix",
    "WarpBlock",
    "ConvOutResBlock",
    "MultiScaleDecoder",
    "mean_ratio_fuse",
    "convert_official_state_dict",
    "glare_decoder",
    "glare_decoder_test",
]

#: Official state-dict prefixes of the layers the release builds but never runs.
UNUSED_PREFIXES = ("conv_out.", "scale.", "bias.", "enc.")
MIX_MODES = ("adaptive", "skip", "none")
#: The MFD's own layers (no counterpart in the VQGAN decoder).
_FUSION_PREFIXES = ("warp.", "mix.", "scale.", "bias.", "enc.")


class AdaptiveMix(nn.Module):
    """Adaptive mix block (the release's ``Mix``, Eq. 5): ``e, h: (B, C, H, W) → s·e + (1 − s)·h``, ``s = sigmoid(w)``.

    ``init`` is the initial ``w``; ``user_beta`` (project extension, not from the paper) scales ``s``.
    """

    def __init__(self, init: float = -0.8, user_beta: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(init)]))
        self.user_beta = user_beta

    def forward(self, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.w) * self.user_beta
        return e * s + h * (1 - s)


class WarpBlock(nn.Module):
    """Deformable warp of ``v`` guided by ``h`` (the release's ``WarpBlock``). ``v, h: (B, C, H, W) → (B, C, H, W)``."""

    def __init__(self, channels: int, deformable_groups: int = 4) -> None:
        super().__init__()
        self.offset = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.dcn = ModulatedDeformConv2d(channels, channels, 3, padding=1, deformable_groups=deformable_groups)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.dcn(v, self.offset(torch.cat([v, h], dim=1)))


def mean_ratio_fuse(h: torch.Tensor, v_warp: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``h + v_warp · mean(h) / mean(v_warp)`` with whole-tensor means; ``eps > 0`` pads ``|mean(v_warp)|``."""
    denom = v_warp.mean()
    if eps > 0:
        denom = denom + eps * torch.where(denom < 0, -1.0, 1.0)
    return h + v_warp * (h.mean() / denom)


class ConvOutResBlock(nn.Module):
    """The release's second ResBlock form (1×1 shortcut named ``conv_out``). ``(B, C_in, H, W) → (B, C_out, H, W)``.

    GLARE builds two of them (``enc``) and never runs them; kept for the parameter count and checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return h + (self.conv_out(x) if self.in_channels != self.out_channels else x)


def _gate(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid())


class MultiScaleDecoder(nn.Module):
    """The Stage-III MFD (the release's ``MultiScaleDecoder2``).

    ``forward(z, nl_feats, enc_feats)``:

    * ``z: (B, z_channels, h, w)``: the flow output (not quantised);
    * ``nl_feats``: the frozen VQGAN decoder's features, coarsest first, as ``GlareVQGAN.decode`` returns
      them: ``[(B, ch·m1, 2h, 2w), (B, ch·m0, 4h, 4w)]``;
    * ``enc_feats``: the conditional encoder's features, finest first, as its ``mid_feat``:
      ``[(B, ch·m0, 4h, 4w), (B, ch·m1, 2h, 2w)]``;

    returns the enhanced image ``(B, out_ch, 4h, 4w)`` (for ``len(ch_mult) = 3``).
    """

    def __init__(self, ch: int = 128, out_ch: int = 3, ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0, resamp_with_conv: bool = True,
                 resolution: int = 256, z_channels: int = 3, mix_init: Sequence[float] = (-1.0, -0.6),
                 deformable_groups: int = 4, mix: str = "adaptive", user_beta: float = 1.0, ratio_eps: float = 0.0,
                 unused_layers: bool = True) -> None:
        super().__init__()
        if mix not in MIX_MODES:
            raise ValueError(f"mix must be one of {MIX_MODES}, got {mix!r}")
        self.num_resolutions = len(ch_mult)
        self.fused_levels = list(reversed(range(self.num_resolutions - 1)))  # coarse → fine, e.g. [1, 0]
        if len(mix_init) != len(self.fused_levels):
            raise ValueError(f"mix_init needs {len(self.fused_levels)} values, got {len(mix_init)}")
        self.z_channels, self.ch, self.ch_mult, self.resolution = z_channels, ch, tuple(ch_mult), resolution
        self.mix_mode, self.ratio_eps, self.unused_layers = mix, ratio_eps, unused_layers
        block_in = build_decoder_trunk(self, ch, ch_mult, num_res_blocks, attn_resolutions, dropout,
                                       resamp_with_conv, resolution, z_channels)
        widths = [ch * ch_mult[i] for i in self.fused_levels]  # e.g. [256, 128]
        if unused_layers:
            self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)
        self.warp = nn.ModuleList(WarpBlock(c, deformable_groups) for c in widths)
        self.residual_conv = nn.Conv2d(ch * ch_mult[0], out_ch, 3, padding=1)
        if unused_layers:
            self.scale = nn.ModuleList(_gate(c) for c in widths)
            self.bias = nn.ModuleList(_gate(c) for c in widths)
            self.enc = nn.ModuleList(ConvOutResBlock(2 * c, c) for c in widths)
        self.mix = nn.ModuleList(AdaptiveMix(m, user_beta) for m in mix_init)

    def _inject(self, j: int, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.mix_mode == "adaptive":
            return self.mix[j](e, h)
        return h + e if self.mix_mode == "skip" else h

    def forward(self, z: torch.Tensor, nl_feats: Sequence[torch.Tensor], enc_feats: Sequence[torch.Tensor]):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level in self.fused_levels:
                j = self.fused_levels.index(i_level)
                h, v = h.float(), nl_feats[j].float()
                h = self._inject(j, enc_feats[i_level], h)
                h = mean_ratio_fuse(h, self.warp[j](v, h), self.ratio_eps)
            if i_level != 0:
                h = up.upsample(h)
        return self.residual_conv(swish(self.norm_out(h)))

    @torch.no_grad()
    def init_from_decoder(self, decoder: nn.Module) -> int:
        """Copy a VQGAN decoder's weights into the mirrored trunk (``conv_in``, ``mid``, ``up``, ``norm_out``) and
        its ``conv_out`` into ``residual_conv``; the mix, warp and never-run layers keep theirs. Project extension
        (the release starts the MFD from PyTorch's defaults). Returns the number of tensors copied.
        """
        source = dict(decoder.state_dict())
        source.update({"residual_conv." + k.removeprefix("conv_out."): v for k, v in source.items()
                       if k.startswith("conv_out.")})
        target = self.state_dict()
        shared = [k for k in target if k in source and not k.startswith(("conv_out.", *_FUSION_PREFIXES))]
        mismatched = [k for k in shared if target[k].shape != source[k].shape]
        if mismatched or not shared:
            raise ValueError(f"decoder does not mirror this MFD: {mismatched[:3] or 'no shared weights'}")
        for key in shared:
            target[key].copy_(source[key])
        return len(shared)

    def example_inputs(self, batch_size: int = 1, input_size: Sequence[int] | None = None) -> tuple:
        """Random ``(z, nl_feats, enc_feats)`` of the right shapes for a latent ``input_size`` ``(C, h, w)``
        (default: the square latent of ``resolution``)."""
        n = self.resolution // 2 ** (self.num_resolutions - 1)
        h, w = (n, n) if input_size is None else (int(input_size[-2]), int(input_size[-1]))
        z = torch.randn(batch_size, self.z_channels, h, w)
        scale = {i: 2 ** (self.num_resolutions - 1 - i) for i in range(self.num_resolutions)}

        def feature(i: int) -> torch.Tensor:
            return torch.randn(batch_size, self.ch * self.ch_mult[i], h * scale[i], w * scale[i])

        return z, [feature(i) for i in self.fused_levels], [feature(i) for i in range(self.num_resolutions - 1)]


def convert_official_state_dict(state: dict[str, torch.Tensor], model: MultiScaleDecoder) -> dict[str, torch.Tensor]:
    """The release's ``MultiScaleDecoder2`` state dict (or a Stage-III ``net_G`` one: the ``deformable_decoder.``
    entries are taken, ``module.`` allowed) → ours. Names are the release's; keys of the unused layers are
    dropped when ``model`` has none; any other unknown key raises ``KeyError``.
    """
    for wrapper in ("state_dict", "params"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("deformable_decoder.") for k in state):
        state = {k.removeprefix("deformable_decoder."): v for k, v in state.items()
                 if k.startswith("deformable_decoder.")}
    ours = model.state_dict()
    out, unknown = {}, []
    for key, value in state.items():
        if key in ours:
            out[key] = value
        elif not (key.startswith(UNUSED_PREFIXES) and not model.unused_layers):
            unknown.append(key)
    if unknown:
        raise KeyError(f"official keys without a counterpart in {type(model).__name__}: {sorted(unknown)[:5]}")
    return out


@register_model(input_size=(3, 105, 155), paper="glare", task="enhancement")
def glare_decoder(**kwargs) -> MultiScaleDecoder:
    """The released Stage-III decoder (44,035,040 parameters; 38,701,789 with ``unused_layers=False``).

    ``input_size`` is the latent of a LOL image as evaluated (600×400 padded to 620×420); the other inputs
    come from ``example_inputs``.
    """
    return MultiScaleDecoder(**kwargs)


@register_model(input_size=(3, 4, 4), paper="glare", task="enhancement")
def glare_decoder_test(**kwargs) -> MultiScaleDecoder:
    """A tiny MFD of the same structure (ch 32, two blocks per level), for tests."""
    config = dict(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, resolution=16, attn_resolutions=(4,),
                  unused_layers=False)
    return MultiScaleDecoder(**{**config, **kwargs})
