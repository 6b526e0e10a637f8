"""CSWin-UNet: Transformer UNet with Cross-Shaped Windows for Medical Image Segmentation.

Liu, Gao, Yu, Wang, Yuan — Information Fusion 113:102634 (2025), arXiv 2407.18070.
Official code: github.com/eatbeanss/CSWin-UNet @ 4e47abe7a1af9005130d7fed1df19fc8437a2414
(no licence file, all rights reserved: this is a clean re-implementation from the
project's specification; the CSWin backbone it derives from is MIT).

Network (224×224 input, defaults = the released ``cswin_tiny_224_lite`` config):
conv stem 7×7/4 + LN → 4 encoder stages of CSWin blocks (depths 1-2-9-1, dims
64-128-256-512, stripe widths 1-2-7-7) joined by 3×3/2 conv merges → final LN →
a bottleneck decoder block → three decoder levels (CARAFE ×2, concat ``[skip, up]``,
Linear, CSWin blocks) → LN → CARAFE ×4 → 1×1 conv head without bias.
Exactly 23,568,492 parameters at ``num_classes=9`` (as the official code).

Deliberate deviations from the release (behaviour on the paper config is identical):

* Sizes are derived from ``embed_dim`` (the release hard-codes the concat Linears to 512/256/128).
* Ablation knobs that the release does not have: ``upsampler`` (Table 5; ``bilinear`` =
  bilinear ×σ + 1×1 projection, ``transposed`` = ConvTranspose2d k = s = σ — the paper
  does not define them further), ``num_skips`` (Table 6; skips are removed from the
  1/16 scale down, as the paper does, and a removed skip's concat + Linear are dropped
  so the upsampler output feeds the decoder stage directly — the paper does not say
  what replaces a skip), ``depths`` (Table 7, mirrored by the decoder), CARAFE settings.
* Constructing the model writes no file (the release saves ``cswin_unet.pth`` to the cwd).
* On the CPU the window attention is the release's explicit ``softmax(scale·q·kᵀ)·v`` as batched
  GEMMs with a hand-written backward (:mod:`models.layers.explicit_attention`; the fused CPU kernel
  is slower for these short windows); on CUDA the fused kernel. Under CPU bf16 autocast the window
  attention (products and softmax) is bf16, and LePE runs in float32 (:mod:`models.layers.cswin_attention`).
* A 1-channel input is repeated to ``in_chans`` channels inside ``forward``, as the
  release's wrapper does; any other channel count must equal ``in_chans``.
* Full (single-branch) attention is used in stage 4 / the bottleneck, and in any stage
  whose map at ``img_size`` equals its stripe width (the release's rule). At 224² both
  coincide; at other sizes the choice is fixed at construction time from ``img_size``.
* SLAB in the blocks (a project extension, :mod:`models.cswin_unet_slab`): ``norm``
  (``"layernorm"`` | ``"bn"`` | ``"repbn"`` | ``"prepbn"``, with ``T`` / ``schedule`` /
  ``counting``), ``attention`` (``"cswin"`` | ``"sla"`` = LLSS | 4 letters), ``slab_decoder``;
  :meth:`CSWinUNet.merge` folds the RepBNs. The defaults build the faithful model unchanged
  (same modules, keys and count; the SLAB files are imported only when an option is set).

Pretrained initialisation (``pretrained=path``) follows the release's ``load_from``:
the CSWin-T ImageNet checkpoint (``state_dict_ema``) is loaded into the encoder and,
with ``stage`` renamed to ``stage_up``, into the decoder blocks; mismatching or
unknown keys are dropped. Nothing is downloaded. The constructor only records the
path; :meth:`CSWinUNet.load_pretrained` reads it (as the release's ``train.py`` calls
``load_from`` after building the net), and the training module calls it only when a
fit starts from scratch (``lightning_modules/pretrained.py``), so testing or resuming
from a Lightning checkpoint never needs the ImageNet file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from models.layers import CARAFE, CSWinBlock, build_upsampler, drop_path_schedule
from models.layers.carafe import shuffle_subpixels
from models.layers.init import init_linear_and_layernorm
from models.layers.upsample import UpsamplerName
from models.registry import register_model

__all__ = [
    "CSWinUNet",
    "convert_official_state_dict",
    "to_official_state_dict",
    "load_cswin_imagenet_weights",
    "PretrainedLoadReport",
]

NUM_STAGES = 4


class ConvStem(nn.Module):
    """Conv 7×7 stride 4 padding 2 + LayerNorm: (B, C_in, H, W) → (B, H/4, W/4, C)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class ConvMerge(nn.Module):
    """Downsampling between stages: conv 3×3 stride 2 + LN, (B, H, W, C) → (B, H/2, W/2, C')."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class ChannelsLastUpsample(nn.Module):
    """Apply a channels-first upsampler to a (B, H, W, C) map."""

    def __init__(self, upsampler: nn.Module) -> None:
        super().__init__()
        self.upsampler = upsampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.upsampler, CARAFE):
            return shuffle_subpixels(self.upsampler.subpixel_forward(x.permute(0, 3, 1, 2)))
        return self.upsampler(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward_then(self, x: torch.Tensor, head: nn.Conv2d) -> torch.Tensor:
        """``head(upsample(x))`` for a 1×1 conv head: (B, H, W, C) → (B, K, σH, σW), contiguous.

        With CARAFE the per-pixel head runs on the sub-pixel layout and only its K output
        channels are interleaved (straight into the channels-first logits).
        """
        if not isinstance(self.upsampler, CARAFE):
            return head(self(x).permute(0, 3, 1, 2)).contiguous()
        logits = self.upsampler.subpixel_forward(x.permute(0, 3, 1, 2), head=head)  # (B, H, W, σ, σ, K)
        b, h, w, s, _, k = logits.shape
        return logits.permute(0, 5, 1, 3, 2, 4).reshape(b, k, h * s, w * s)


class DecoderLevel(nn.Module):
    """Upsample ×2 → optional skip fusion (concat [skip, up] + Linear) → CSWin blocks.

    x: (B, h, w, 2C) and skip: (B, 2h, 2w, C) → (B, 2h, 2w, C).
    """

    def __init__(self, upsample: nn.Module, dim: int, blocks: list[nn.Module], use_skip: bool) -> None:
        super().__init__()
        self.upsample = ChannelsLastUpsample(upsample)
        self.skip_fusion = nn.Linear(2 * dim, dim) if use_skip else None
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.upsample(x)
        if self.skip_fusion is not None:
            x = self.skip_fusion(torch.cat([skip, x], dim=-1))
        return self.blocks(x)


class CSWinUNet(nn.Module):
    """U-shaped CSWin transformer with CARAFE upsampling.

    x: (B, 1 or in_chans, H, W) → logits (B, num_classes, H, W), H and W multiples of
    32 · lcm(split sizes of the two-branch stages) (224 for the paper config).
    """

    def __init__(
        self,
        num_classes: int = 9,
        img_size: int = 224,
        in_chans: int = 3,
        embed_dim: int = 64,
        depths: tuple[int, int, int, int] = (1, 2, 9, 1),
        split_size: tuple[int, int, int, int] = (1, 2, 7, 7),
        num_heads: tuple[int, int, int, int] = (2, 4, 8, 16),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        upsampler: UpsamplerName = "carafe",
        num_skips: int = 3,
        carafe_up_kernel: int = 3,
        carafe_encoder_kernel: int = 3,
        carafe_compression: int = 4,
        pretrained: str | None = None,
        norm: Literal["layernorm", "bn", "repbn", "prepbn"] = "layernorm",
        attention: str = "cswin",
        T: int = 120_000,
        schedule: Literal["linear", "cosine", "step"] = "linear",
        counting: Literal["global_step", "per_forward"] = "global_step",
        slab_decoder: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("depths", depths), ("split_size", split_size), ("num_heads", num_heads)):
            if len(value) != NUM_STAGES:
                raise ValueError(f"{name} needs {NUM_STAGES} entries, got {tuple(value)}")
        if not 0 <= num_skips <= NUM_STAGES - 1:
            raise ValueError(f"num_skips must be 0..{NUM_STAGES - 1}, got {num_skips}")
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.depths, self.num_skips, self.upsampler_name = tuple(depths), num_skips, upsampler
        dims = [embed_dim * 2**s for s in range(NUM_STAGES)]
        resolutions = [img_size // 4 // 2**s for s in range(NUM_STAGES)]
        rates = drop_path_schedule(depths, drop_path_rate)
        slab = None
        if norm != "layernorm" or attention != "cswin":  # SLAB blocks: models/cswin_unet_slab.py
            from models.cswin_unet_slab import SLABOptions

            slab = SLABOptions(norm, attention, T, schedule, counting, slab_decoder)
        self.slab = slab

        def stage_blocks(s: int, decoder: bool = False) -> list[nn.Module]:
            full = s == NUM_STAGES - 1 or resolutions[s] == split_size[s]
            blocks = [
                CSWinBlock(dims[s], num_heads[s], split_size[s], mlp_ratio, qkv_bias, qk_scale,
                           drop_rate, attn_drop_rate, rates[s][i], full_attention=full)
                for i in range(depths[s])
            ]
            if slab is not None:
                blocks = [slab.convert(b, s, resolutions[s], decoder=decoder) for b in blocks]
            return blocks

        def upsampler_for(dim_in: int, dim_out: int, scale: int) -> nn.Module:
            return build_upsampler(upsampler, dim_in, dim_out, scale, carafe_up_kernel=carafe_up_kernel,
                                   carafe_encoder_kernel=carafe_encoder_kernel,
                                   carafe_compression=carafe_compression)

        # Encoder
        self.stem = ConvStem(in_chans, embed_dim)
        self.encoder = nn.ModuleList(nn.Sequential(*stage_blocks(s)) for s in range(NUM_STAGES))
        self.downsample = nn.ModuleList(ConvMerge(dims[s], dims[s + 1]) for s in range(NUM_STAGES - 1))
        self.encoder_norm = nn.LayerNorm(dims[-1])
        # Decoder: bottleneck blocks, then levels at 1/16, 1/8, 1/4. Skips are removed
        # from the coarsest scale first: level j (0 = 1/16) keeps its skip iff j >= 3 - num_skips.
        self.bottleneck = nn.Sequential(*stage_blocks(NUM_STAGES - 1, decoder=True))
        self.decoder = nn.ModuleList(
            DecoderLevel(upsampler_for(dims[s + 1], dims[s], 2), dims[s], stage_blocks(s, decoder=True),
                         use_skip=(NUM_STAGES - 2 - s) >= NUM_STAGES - 1 - num_skips)
            for s in reversed(range(NUM_STAGES - 1))
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.final_upsample = ChannelsLastUpsample(upsampler_for(embed_dim, embed_dim, 4))
        self.head = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(init_linear_and_layernorm)
        self.pretrained = pretrained or None  # read by load_pretrained(), never here

    def load_pretrained(self) -> PretrainedLoadReport | None:
        """Initialise from ``self.pretrained`` (CSWin-T ImageNet checkpoint); no-op when it is None.

        Raises FileNotFoundError naming the file when it does not exist.
        """
        if self.pretrained is None:
            return None
        return load_cswin_imagenet_weights(self, self.pretrained)

    def merge(self) -> nn.Module:
        """An eval-mode copy with every block RepBN/BN folded into ``qkv``/``fc1`` (:mod:`models.cswin_unet_slab`).

        LayerNorms are not foldable: on the faithful model this is an eval-mode copy of it.
        """
        from models.cswin_unet_slab import merge_cswin_unet

        return merge_cswin_unet(self)

    @property
    def skip_scales(self) -> list[str]:
        """Scales whose skip connection is kept, e.g. ``['1/16', '1/8', '1/4']``."""
        scales = ["1/16", "1/8", "1/4"]
        return [scale for scale, level in zip(scales, self.decoder, strict=True) if level.skip_fusion is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.repeat(1, self.in_chans, 1, 1)
        elif x.shape[1] != self.in_chans:
            raise ValueError(f"expected 1 or {self.in_chans} input channels, got {x.shape[1]}")
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"CSWin-UNet needs H and W divisible by 32 (four 2× levels after the 4× stem), "
                             f"got {tuple(x.shape[-2:])}")
        x = self.stem(x)
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if s < NUM_STAGES - 1:
                skips.append(x)
                x = self.downsample[s](x)
        x = self.bottleneck(self.encoder_norm(x))
        for level, skip in zip(self.decoder, reversed(skips), strict=True):
            x = level(x, skip)
        return self.final_upsample.forward_then(self.decoder_norm(x), self.head)


# --------------------------------------------------------------------------- official layout
# The official names (networks/cswin_unet.py, inside the ``cswin_unet.`` wrapper prefix).
_BLOCK_TO_OFFICIAL = [
    (r"attn\.qkv\.", "qkv."),
    (r"attn\.proj\.", "proj."),
    (r"attn\.branches\.(\d+)\.lepe\.", r"attns.\1.get_v."),
]
_CARAFE_TO_OFFICIAL = [
    (r"(upsampler\.)?compressor\.", "down."),
    (r"(upsampler\.)?content_encoder\.", "encoder."),
    (r"(upsampler\.)?projection\.", "out."),
]


def _sub_first(rules: list[tuple[str, str]], key: str) -> str:
    for pattern, repl in rules:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    return key


def official_block_key(key: str) -> str:
    """Our CSWinBlock key → the official CSWinBlock key (``attn.qkv.weight`` → ``qkv.weight``)."""
    return _sub_first(_BLOCK_TO_OFFICIAL, key)


def official_carafe_key(key: str) -> str:
    """Our CARAFE key → the official CARAFE key (``compressor.weight`` → ``down.weight``)."""
    return _sub_first(_CARAFE_TO_OFFICIAL, key)


def official_key(key: str) -> str:
    """Our CSWinUNet state_dict key → the official one (without the ``cswin_unet.`` prefix)."""
    simple = {"stem.conv.": "stage1_conv_embed.0.", "stem.norm.": "stage1_conv_embed.2.",
              "encoder_norm.": "norm.", "decoder_norm.": "norm_up.", "head.": "output."}
    for ours, theirs in simple.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    if m := re.match(r"encoder\.(\d)\.(\d+)\.(.*)", key):
        return f"stage{int(m[1]) + 1}.{m[2]}.{official_block_key(m[3])}"
    if m := re.match(r"downsample\.(\d)\.(.*)", key):
        return f"merge{int(m[1]) + 1}.{m[2]}"
    if m := re.match(r"bottleneck\.(\d+)\.(.*)", key):
        return f"stage_up4.{m[1]}.{official_block_key(m[2])}"
    if m := re.match(r"decoder\.(\d)\.(upsample|skip_fusion|blocks)\.(.*)", key):
        level = NUM_STAGES - int(m[1])  # decoder.0 → upsample4 / concat_linear4 / stage_up3
        if m[2] == "upsample":
            return f"upsample{level}.{official_carafe_key(m[3])}"
        if m[2] == "skip_fusion":
            return f"concat_linear{level}.{m[3]}"
        block, rest = m[3].split(".", 1)
        return f"stage_up{level - 1}.{block}.{official_block_key(rest)}"
    if m := re.match(r"final_upsample\.(.*)", key):
        return f"upsample1.{official_carafe_key(m[1])}"
    raise KeyError(f"no official counterpart for CSWinUNet key {key!r}")


def to_official_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = "cswin_unet.") -> dict[str, torch.Tensor]:
    """Our CSWinUNet state_dict → the official layout (keys prefixed as the released wrapper)."""
    return {prefix + official_key(k): v for k, v in state_dict.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "cswin_unet."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor], model: CSWinUNet, *, strict: bool = True
) -> dict[str, torch.Tensor]:
    """Official CSWin-UNet state_dict (with or without ``cswin_unet.``) → ``model``'s layout.

    The mapping is the exact inverse of :func:`official_key` over ``model``'s keys; with
    ``strict`` an official key without a counterpart raises (listing the first few).
    """
    inverse = {official_key(k): k for k in model.state_dict()}
    out, unknown = {}, []
    for key, value in state_dict.items():
        ours = inverse.get(_strip_prefixes(key))
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if strict and unknown:
        raise KeyError(f"{len(unknown)} official keys have no counterpart in this CSWinUNet, e.g. {unknown[:5]}")
    return out


@dataclass
class PretrainedLoadReport:
    """What :func:`load_cswin_imagenet_weights` did, by our key names."""

    path: str
    loaded: list[str] = field(default_factory=list)
    random_init: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.random_init)} left at random init, "
                f"{len(self.ignored)} checkpoint entries unused")


def load_cswin_imagenet_weights(model: CSWinUNet, path: str | Path) -> PretrainedLoadReport:
    """Initialise encoder *and* decoder blocks from a CSWin-T ImageNet checkpoint (release ``load_from``).

    Reads ``state_dict_ema`` (or ``state_dict`` / ``model`` / the raw dict) with
    ``weights_only=True``; every ``stage*`` key is also offered as ``stage_up*``; keys
    with no counterpart or a different shape are skipped (so CSWin-T's stage-3 blocks
    9–20 and its classifier are ignored). CARAFE, the skip Linears, ``decoder_norm`` and
    the head keep their random init.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} not found: download the CSWin-T 224 ImageNet-1K weights "
            "(cswin_tiny_224.pth) from the microsoft/CSWin-Transformer release and pass its path"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(checkpoint, dict) and key in checkpoint:
            checkpoint = checkpoint[key]
            break
    offered = {_strip_prefixes(k): v for k, v in checkpoint.items()}
    offered.update({k.replace("stage", "stage_up"): v for k, v in list(offered.items()) if "stage" in k})
    own = model.state_dict()
    report = PretrainedLoadReport(str(path))
    inverse = {official_key(k): k for k in own}
    # SLAB's progressive norm (models/cswin_unet_slab.py): its LayerNorm branch takes the checkpoint's LayerNorm
    inverse.update({k.replace(".ln.", ".", 1): ours for k, ours in list(inverse.items()) if ".ln." in k})
    to_load = {}
    for key, value in offered.items():
        ours = inverse.get(key)
        if ours is not None and own[ours].shape == value.shape:
            to_load[ours] = value
        elif "stage_up" not in key:
            report.ignored.append(key)
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.random_init = sorted(set(own) - set(to_load))
    return report


# --------------------------------------------------------------------------- registry
@register_model(input_size=(3, 224, 224), paper="cswin_unet")
def cswin_unet(**kwargs) -> CSWinUNet:
    """Released configuration (``cswin_tiny_224_lite``): 23,568,492 parameters at 9 classes."""
    return CSWinUNet(**kwargs)


@register_model(input_size=(3, 64, 64), paper="cswin_unet")
def cswin_unet_test(**kwargs) -> CSWinUNet:
    """Tiny variant for tests: 64² input, width 16, one block per stage."""
    config = dict(img_size=64, embed_dim=16, depths=(1, 1, 1, 1), split_size=(1, 2, 2, 2),
                  num_heads=(2, 2, 4, 4), drop_path_rate=0.0)
    config.update(kwargs)
    return CSWinUNet(**config)
