"""ConvFormer's SETR host family: plain SETR, its anti-collapse variants, and SETR + ConvFormer.

Lin, Yan, Deng, Zheng, Yu — "ConvFormer: Plug-and-Play CNN-Style Transformers for
Improving Medical Image Segmentation", MICCAI 2023, arXiv 2309.05674. Official code:
github.com/xianlin7/ConvFormer @ 80e1b4b (MIT), ``models/SETR.py``; re-implemented
from the project specification (``shared/papers/convformer.md`` §2.6–2.8, §6).

Shapes (defaults: 256² input, stride 8, dim 512, 12 blocks of 8 heads × 64, MLP 2048):

* ``attention="vanilla" | "reattention" | "layerscale" | "refiner"`` (``Setr``,
  ``Setr_deepvit``, ``Setr_cait``, ``Setr_refiner``): x (B, C_in, H, W) → 8×8 patches
  flattened as (p1 p2 c) → Linear → (B, N, 512), N = H/8 · W/8, + positional embedding
  (randn) → Dropout(0.1) → 12 pre-LN blocks (ReLU MLP, dropout 0.1, no final norm) →
  (B, 512, H/8, W/8).
* ``attention="convformer"`` (``Setr_ConvFormer``): pooling module (B, C_in, H, W) →
  (B, 512, H/8, W/8) → 12 ConvFormer blocks (CSA + CFFN, no norm) → same shape.
* Decoder (all): 3×3 conv 512→128 + BN + ReLU, bilinear ×2 (align_corners), 3×3 conv
  128→128 + BN + ReLU, ×2, 1×1 conv → classes (bias), ×2 → (B, classes, H, W).

Parameter counts at 1 channel / 4 classes: 39,106,052 (vanilla), 39,107,588
(reattention), 39,107,076 (layerscale), 39,114,788 (refiner), 115,609,124 (convformer),
as released (§2.8; the first and last are the fixtures' exact counts).

Faithful to the release: layer structure and initialisation (PyTorch defaults,
randn positional embedding, θ ~ N(0, 1)), the cosine-similarity × row-normalised
Gaussian CSA with σ ∈ (0.003, 0.4), the ReLU after the CFFN's second BN, the
LayerScale γ pair shared by all 12 layers, Re-attention without normalisation and
with its unused pre-softmax h×h matrix (kept, frozen: its gradient is always None in
the release; the total count matches, the trainable count is 768 lower).

Deviations (no numerical effect where the release runs):

* The CSA distance map is computed from the actual H×W at run time and cached per
  (H, W, device, dtype) outside the state_dict (the release builds it once from
  ``patch_num`` and calls ``.cuda()`` in ``__init__``; any input other than 256²
  fails there, issues #4/#12). So SETR + ConvFormer runs at any size divisible by 2ⁿ.
* The vanilla family's positional embedding is built for ``img_size``; another input
  size **interpolates** it (timm's ``resample_abs_pos_embed``, bicubic) instead of
  failing. At ``img_size`` nothing changes.
* Re-attention's heat-map plotting call in ``forward`` is removed.
* Attention recording for the collapse diagnostic: :meth:`SETR.record_attention` /
  :meth:`SETR.attention_maps` (off by default, nothing stored or slower when off).

Switches (spec §6): ``sigma_max`` (α, Table 2) and ``sigma_min``;
``share_layerscale=False`` (one γ pair per layer); ``reattention_norm=True``
(DeepViT's BatchNorm2d(h) after the head mixing); ``num_downsamples`` (pooling
stages; the decoder's last upsampling covers the remaining 2ⁿ/4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from models.layers.attention_recording import AttentionRecording
from models.layers.convformer import (
    ConvBNReLU,
    ConvFormerEncoder,
    ConvFormerPooling,
    official_convformer_encoder_key,
    official_pooling_key,
)
from models.layers.vit_variants import ATTENTION_TYPES, TransformerEncoder, official_token_encoder_key
from models.registry import register_model

__all__ = ["SETR", "SETRDecoder", "PatchEmbedding", "official_key", "convert_official_state_dict",
           "to_official_state_dict"]


class PatchEmbedding(nn.Module):
    """Non-overlapping p×p patches flattened as (p1 p2 c) → Linear: (B, C, H, W) → (B, H/p · W/p, dim)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return self.proj(x.reshape(b, (h // p) * (w // p), p * p * c))


class SETRDecoder(nn.Module):
    """SETR's progressive decoder: (B, dim, h, w) → (B, classes, s·h, s·w), s = 4 · ``last_scale``."""

    def __init__(self, dim: int, num_classes: int, last_scale: int = 2) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(dim, dim // 4)
        self.conv2 = ConvBNReLU(dim // 4, dim // 4)
        self.head = nn.Conv2d(dim // 4, num_classes, kernel_size=1)
        self.last_scale = last_scale

    @staticmethod
    def _up(x: torch.Tensor, scale: int) -> torch.Tensor:
        return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._up(self.conv1(x), 2)
        x = self._up(self.conv2(x), 2)
        return self._up(self.head(x), self.last_scale)


class SETR(AttentionRecording, nn.Module):
    """SETR (the ConvFormer release's baselines) with a selectable transformer.

    x: (B, in_channels, H, W), H and W multiples of the stride (``patch_size``, or
    2^``num_downsamples`` for ConvFormer) → logits (B, num_classes, H, W).
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 1,
        img_size: int = 256,
        attention: str = "vanilla",
        patch_size: int = 8,
        dim: int = 512,
        depth: int = 12,
        heads: int = 8,
        dim_head: int = 64,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        emb_dropout: float = 0.1,
        sigma_min: float = 0.003,
        sigma_max: float = 0.4,
        share_layerscale: bool = True,
        layerscale_init: float = 1e-4,
        reattention_norm: bool = False,
        num_downsamples: int = 3,
        pooling_widths: tuple[int, ...] = (64, 128, 256),
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        self.num_classes, self.in_channels, self.img_size = num_classes, in_channels, img_size
        self.attention, self.dim = attention, dim
        self.stride = 2**num_downsamples if attention == "convformer" else patch_size
        if self.stride % 4 or img_size % self.stride:
            raise ValueError(f"stride {self.stride} must be a multiple of 4 dividing img_size={img_size}")
        if attention == "convformer":
            self.pooling = ConvFormerPooling(in_channels, dim, num_downsamples, pooling_widths)
            self.encoder = ConvFormerEncoder(dim, depth, heads, dim_head, mlp_dim, sigma_min, sigma_max)
        else:
            self.grid = img_size // patch_size
            self.patch_embed = PatchEmbedding(in_channels, dim, patch_size)
            self.pos_embed = nn.Parameter(torch.randn(1, self.grid**2, dim))
            self.pos_drop = nn.Dropout(emb_dropout)
            self.encoder = TransformerEncoder(dim, depth, heads, dim_head, mlp_dim, dropout, attention,
                                              share_layerscale, layerscale_init, reattention_norm=reattention_norm)
        self.decoder = SETRDecoder(dim, num_classes, last_scale=self.stride // 4)

    def positional_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, h·w, dim): the learned one at ``img_size``, else resampled (bicubic) to h×w."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        return resample_abs_pos_embed(self.pos_embed, (h, w), (self.grid, self.grid), num_prefix_tokens=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {c}")
        if height % self.stride or width % self.stride:
            raise ValueError(f"input {height}×{width} is not divisible by the stride {self.stride}")
        h, w = height // self.stride, width // self.stride
        if self.attention == "convformer":
            feats = self.encoder(self.pooling(x))
        else:
            tokens = self.pos_drop(self.patch_embed(x) + self.positional_embedding(h, w))
            feats = self.encoder(tokens).transpose(1, 2).reshape(b, self.dim, h, w)
        return self.decoder(feats)


# ------------------------------------------------------------------------------------------------
# Entry points (input 256², 1 channel, 4 classes: the ACDC configuration of the release)
# ------------------------------------------------------------------------------------------------
@register_model(input_size=(1, 256, 256), paper="convformer")
def setr(**kwargs) -> SETR:
    """Plain SETR (``Setr``): 39,106,052 parameters at 1 channel / 4 classes."""
    return SETR(**{"attention": "vanilla", **kwargs})


@register_model(input_size=(1, 256, 256), paper="convformer")
def setr_reattention(**kwargs) -> SETR:
    """SETR + Re-attention (``Setr_deepvit``): 39,107,588 parameters (768 frozen, unused as released)."""
    return SETR(**{"attention": "reattention", **kwargs})


@register_model(input_size=(1, 256, 256), paper="convformer")
def setr_layerscale(**kwargs) -> SETR:
    """SETR + LayerScale (``Setr_cait``, one γ pair shared by all layers): 39,107,076 parameters."""
    return SETR(**{"attention": "layerscale", **kwargs})


@register_model(input_size=(1, 256, 256), paper="convformer")
def setr_refiner(**kwargs) -> SETR:
    """SETR + Refiner (``Setr_refiner``): 39,114,788 parameters."""
    return SETR(**{"attention": "refiner", **kwargs})


@register_model(input_size=(1, 256, 256), paper="convformer")
def setr_convformer(**kwargs) -> SETR:
    """SETR + ConvFormer (``Setr_ConvFormer``): 115,609,124 parameters."""
    return SETR(**{"attention": "convformer", **kwargs})


@register_model(input_size=(1, 32, 32), paper="convformer")
def convformer_setr_test(**kwargs) -> SETR:
    """Tiny SETR + ConvFormer for tests: 32² input, width 32, 2 blocks of 2 heads × 16."""
    config = dict(attention="convformer", img_size=32, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64,
                  pooling_widths=(8, 16, 16))
    config.update(kwargs)
    return SETR(**config)


# ------------------------------------------------------------------------------------------------
# Official checkpoints
# ------------------------------------------------------------------------------------------------
_DECODER_KEYS = {"conv1.conv.": "0.", "conv1.bn.": "1.", "conv2.conv.": "4.", "conv2.bn.": "5.", "head.": "8."}


def official_key(key: str, attention: str = "vanilla") -> str:
    """Our :class:`SETR` state_dict key → the release's (``Setr*`` of models/SETR.py) for ``attention``."""
    head, _, rest = key.partition(".")
    if head == "decoder":
        for ours, official in _DECODER_KEYS.items():
            if rest.startswith(ours):
                return f"decoder.{official}{rest[len(ours):]}"
    elif head == "pooling":
        return f"cnn_encoder.{official_pooling_key(rest)}"
    elif head == "encoder":
        encoder_key = official_convformer_encoder_key if attention == "convformer" else official_token_encoder_key
        return f"transformer.{encoder_key(rest)}"
    elif head == "patch_embed" and rest.startswith("proj."):
        return f"to_patch_embedding.1.{rest[5:]}"
    elif key == "pos_embed":
        return "pos_embedding"
    raise KeyError(f"no official counterpart for SETR key {key!r}")


def _official_keys(model: SETR) -> dict[str, str]:
    """official → ours over ``model``'s state_dict."""
    return {official_key(key, model.attention): key for key in model.state_dict()}


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], model: SETR, *,
                                strict: bool = True) -> dict[str, torch.Tensor]:
    """A state_dict of the release's ``Setr`` / ``Setr_deepvit`` / ``Setr_cait`` / ``Setr_refiner`` /
    ``Setr_ConvFormer`` (``module.`` prefix allowed) → ``model``'s layout.

    With ``strict`` an official key without a counterpart raises, listing the first few.
    """
    inverse = _official_keys(model)
    out, unknown = {}, []
    for key, value in state_dict.items():
        ours = inverse.get(key.removeprefix("module."))
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if strict and unknown:
        raise KeyError(f"{len(unknown)} official keys have no counterpart in this SETR, e.g. {unknown[:5]}")
    return out


def to_official_state_dict(model: SETR) -> dict[str, torch.Tensor]:
    """``model``'s state_dict under the release's names."""
    names = {ours: official for official, ours in _official_keys(model).items()}
    return {names[k]: v for k, v in model.state_dict().items()}
