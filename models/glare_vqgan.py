"""GLARE Stage I: the normal-light VQGAN (codebook prior) of

    Zhou et al., "GLARE: Low Light Image Enhancement via Generative Latent Feature based
    Codebook Retrieval", ECCV 2024, arXiv 2407.12431.

Official code: github.com/LowLevelAI/GLARE @ 7ea5027 (``code/models/modules/VQModel_arch.py``,
``encoder_decoder.py``, ``quantize.py``; Apache-2.0 per the project's specification). Re-implemented
from ``shared/papers/glare.md`` §2.2; parameter names equal the release's, so ``vqgan.pkl`` loads by name.

:class:`GlareVQGAN` (registered ``glare_vqgan``: 62,907,614 parameters, equal to the release):
a taming/LDM "VQ-f4" autoencoder, ch 128, ch_mult (1, 2, 4) (f = 4), 2 ResNet blocks per encoder
level (3 per decoder level), attention at the H/4 level and in the middle blocks, z = 3, and a
:class:`~models.layers.vector_quantizer.VectorQuantizer` of 8192 × 3 codes (β = 0.25, non-legacy loss).

* ``encode(x)``: ``(B, 3, H, W) → (B, 3, H/4, W/4)``, the **continuous** latent (encoder + quant_conv;
  the release returns it with a ``None`` VGG slot, dropped here).
* ``decode(h)``: quantises ``h``, ``post_quant_conv``, decoder → ``(image, emb_loss, [v1, v0])`` with the
  decoder features ``v1: (B, 256, H/2, W/2)`` and ``v0: (B, 128, H, W)`` after the level-1 and level-0
  blocks (the release's ``code_decoder_output``, used by Stage III).
* ``forward(x)``: ``(reconstruction, emb_loss)`` as the release's ``VQModel.forward``.

Layers the release builds but GLARE never runs, kept by default so the count matches
(``unused_layers=False`` drops them, −2,326,592 parameters): ``conv_semantic`` (1×1 conv 3→256 + ReLU,
the head of a disabled VGG "semantic" loss, reachable through ``decode(h, vgg_feat=...)``) and
``vgg_feat_extractor`` (VGG19 conv1_1..relu3_4 with ImageNet mean/std buffers, ``requires_grad=False``).

Deviations: the timestep-embedding branch of the LDM blocks (never built, ``temb_ch = 0``), index
remapping (``remap=None``) and ``double_z`` (False) are not offered; the release's ``decode_code`` calls a
quantiser method that does not exist, :meth:`GlareVQGAN.decode_code` decodes code indices correctly;
the release hard-codes "every level but index 2" for the returned decoder features, here it is every
level but the lowest (the same for three levels). Stage-I training code is not released (spec §3.3).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.vector_quantizer import VectorQuantizer
from models.layers.vqgan_blocks import VQGANDecoder, VQGANEncoder
from models.registry import register_model

__all__ = [
    "GlareVQGAN",
    "VGG19Features",
    "UNUSED_PREFIXES",
    "convert_official_state_dict",
    "load_released_vqgan",
    "glare_vqgan",
    "glare_vqgan_test",
]

#: Official state-dict prefixes of the layers GLARE builds but never uses.
UNUSED_PREFIXES = ("conv_semantic.", "vgg_feat_extractor.")

_VGG19_LAYERS = ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1", "conv2_2", "relu2_2",
                 "pool2", "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4")
_VGG19_WIDTHS = {"conv1_1": (3, 64), "conv1_2": (64, 64), "conv2_1": (64, 128), "conv2_2": (128, 128),
                 "conv3_1": (128, 256), "conv3_2": (256, 256), "conv3_3": (256, 256), "conv3_4": (256, 256)}


class VGG19Features(nn.Module):
    """VGG19 ``features`` up to ``relu3_4`` with ImageNet input normalisation (BasicSR's extractor, frozen).

    ``x: (B, 3, H, W)`` in [0, 1] → ``{"relu3_4": (B, 256, H/4, W/4)}``. Weights are random unless loaded
    (the release loads torchvision's ImageNet VGG19; nothing is downloaded here).
    """

    def __init__(self, layer: str = "relu3_4") -> None:
        super().__init__()
        self.layer = layer
        modules = OrderedDict()
        for name in _VGG19_LAYERS[:_VGG19_LAYERS.index(layer) + 1]:
            if name.startswith("conv"):
                modules[name] = nn.Conv2d(*_VGG19_WIDTHS[name], 3, padding=1)
            elif name.startswith("relu"):
                modules[name] = nn.ReLU(inplace=True)
            else:
                modules[name] = nn.MaxPool2d(kernel_size=2, stride=2)
        self.vgg_net = nn.Sequential(modules)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.layer: self.vgg_net((x - self.mean) / self.std)}


class GlareVQGAN(nn.Module):
    """The released VQGAN (``VQModel``). ``x: (B, 3, H, W)``, H and W multiples of 4."""

    def __init__(self, resolution: int = 256, n_embed: int = 8192, embed_dim: int = 3, z_channels: int = 3,
                 in_channels: int = 3, out_ch: int = 3, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (64,), dropout: float = 0.0,
                 beta: float = 0.25, legacy: bool = False, unused_layers: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = VQGANEncoder(ch, ch_mult, num_res_blocks, attn_resolutions, dropout, True, in_channels,
                                    resolution, z_channels, double_z=False)
        self.decoder = VQGANDecoder(ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, dropout, True,
                                    resolution, z_channels)
        self.quantize = VectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.unused_layers = unused_layers
        if unused_layers:
            self.conv_semantic = nn.Sequential(nn.Conv2d(embed_dim, 256, 1), nn.ReLU())
            self.vgg_feat_extractor = VGG19Features("relu3_4")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) → (B, embed_dim, H/4, W/4)``: the continuous (pre-quantisation) latent."""
        return self.quant_conv(self.encoder(x))

    def decode(self, h: torch.Tensor, vgg_feat: torch.Tensor | None = None):
        """Quantise and decode ``h: (B, embed_dim, h, w)`` → ``(image, emb_loss, [v1, v0])``.

        ``vgg_feat`` (the release's disabled semantic loss): adds ``0.1·mse(conv_semantic(z_q), vgg_feat)``.
        """
        quant, emb_loss, _ = self.quantize(h)
        if vgg_feat is not None:
            if not self.unused_layers:
                raise ValueError("the semantic loss needs conv_semantic: build with unused_layers=True")
            emb_loss = emb_loss + 0.1 * F.mse_loss(self.conv_semantic(quant), vgg_feat)
        image, features = self.decoder(self.post_quant_conv(quant))
        return image, emb_loss, features

    def decode_code(self, indices: torch.Tensor, shape: tuple[int, int, int, int]):
        """Decode code ``indices`` (``B·h·w`` of them) with ``shape = (B, h, w, embed_dim)`` → ``(image, [v1, v0])``."""
        quant = self.quantize.get_codebook_entry(indices, shape)
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, emb_loss, _ = self.decode(self.encode(x))
        return image, emb_loss


def convert_official_state_dict(state: dict[str, torch.Tensor], model: GlareVQGAN) -> dict[str, torch.Tensor]:
    """A released VQModel state dict (``vqgan.pkl``; ``{"state_dict"|"params": ...}`` and ``module.`` allowed) → ours.

    Names are the release's. Keys of the unused layers are dropped when ``model`` has none; any
    other unknown key raises ``KeyError``.
    """
    for wrapper in ("state_dict", "params", "params_ema"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    ours = model.state_dict()
    out, unknown = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in ours:
            out[key] = value
        elif not (key.startswith(UNUSED_PREFIXES) and not getattr(model, "unused_layers", True)):
            unknown.append(key)
    if unknown:
        raise KeyError(f"official keys without a counterpart in {type(model).__name__}: {sorted(unknown)[:5]}")
    return out


def load_released_vqgan(path: str | Path, model: GlareVQGAN | None = None) -> GlareVQGAN:
    """Load the authors' ``vqgan.pkl`` (a file the user gives; nothing is downloaded) into ``model``.

    The release loads it with ``strict=False``; here only the unused layers (VGG slice, semantic
    head) may be missing from the file, every core weight must be present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"released VQGAN weights not found: {path}")
    model = model if model is not None else GlareVQGAN()
    state = convert_official_state_dict(torch.load(path, map_location="cpu", weights_only=True), model)
    missing, _ = model.load_state_dict(state, strict=False)
    core_missing = [k for k in missing if not k.startswith(UNUSED_PREFIXES)]
    if core_missing:
        raise KeyError(f"{path}: missing VQGAN weights {core_missing[:5]} ({len(core_missing)} in all)")
    return model


@register_model(input_size=(3, 420, 620), paper="glare", task="enhancement")
def glare_vqgan(**kwargs) -> GlareVQGAN:
    """The released normal-light VQGAN (62,907,614 parameters; 60,581,022 with ``unused_layers=False``)."""
    return GlareVQGAN(**kwargs)


@register_model(input_size=(3, 32, 32), paper="glare", task="enhancement")
def glare_vqgan_test(**kwargs) -> GlareVQGAN:
    """A tiny VQGAN of the same structure (ch 32, one block per level, 64 codes), for tests."""
    config = dict(resolution=32, n_embed=64, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(8,),
                  unused_layers=False)
    return GlareVQGAN(**{**config, **kwargs})
