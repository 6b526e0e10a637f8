"""TransUNet (R50-ViT-B/16 hybrid) with ConvFormer's five attention types (ConvFormer Table 1 host).

ConvFormer: Lin, Yan, Deng, Zheng, Yu — MICCAI 2023, arXiv 2309.05674 (spec:
``shared/papers/convformer.md`` §2.6–2.7). **Reconstructed from the compiled bytecode of
the authors' private codebase** (``Transunet.cpython-36.pyc``, spec §2.6): the release
has no TransUNet source, and no fixtures exist, so nothing here is checked against it.
The parameter counts pinned in the tests are ours (regression values).

Network (256×256 input): a 1-channel slice is repeated to 3 channels (TransUNet's
convention) → R50 hybrid encoder (timm ResNetV2 (3, 4, 9), :mod:`models.layers.transunet`)
giving (B, 1024, 16, 16) and skips at 1/8, 1/4, 1/2 → transformer on the 16×16 grid →
(B, 768, 16, 16) → TransUNet CUP decoder (conv_more 768 → 512, levels (256, 128, 64, 16),
3 skips, 3×3 head) → logits (B, num_classes, H, W).

* ``attention`` in {vanilla, reattention, layerscale, refiner}: TransUNet's ViT part,
  1×1 conv patch embedding 1024 → 768 + learnable position embedding (zeros) + dropout
  0.1 → 12 pre-LN blocks (12 heads × 64, q/k/v/out with bias, exact-GELU MLP 3072,
  dropout 0.1, LN eps 1e-6, MLP init xavier-uniform / bias N(0, 1e-6)) → final
  LayerNorm; the attention is swapped per spec §2.7 (shared
  :class:`~models.layers.vit_variants.TransformerEncoder`; LayerScale γ = 1e-4, one pair
  shared by all blocks unless ``share_layerscale=False``).
* ``attention="convformer"``: "CNN embedding" 3×3 conv 1024 → 768 + BN + ReLU (the
  pooling module with no max-pool; no position embedding) → 12 ConvFormer blocks
  (D 768, 12 heads × 64, CFFN 3072) on the 16×16 map → no final LayerNorm.

Choices (the bytecode configuration does not settle them):

* 1-channel input is repeated to 3 channels inside ``forward`` (TransUNet's
  ``x.repeat(1, 3, 1, 1)``), so the R50 root stays the ImageNet-shaped 3-channel conv
  and the parameter count is the same for 1 and 3 input channels.
* No pretrained loading: the factory path of spec §2.6 uses ``pretrained=False``, and
  the project's pretrained hook (``lightning_modules/pretrained.py``) is optional, so
  there is no ``pretrained`` argument.
* Position embedding for another grid than ``img_size / 16`` is resampled bicubically
  (timm ``resample_abs_pos_embed``); TransUNet would fail. The convformer variant has none.
* R50 init: timm's ResNetV2 init (TransUNet loads ImageNet weights over PyTorch defaults).

From timm: ResNetV2 (in :mod:`models.layers.transunet`), ``resample_abs_pos_embed``; the
transformers are the shared ConvFormer / ViT-variant layers. Hand-written: the 1×1-conv
patch embedding with its zero-initialised position embedding (timm's ``HybridEmbed`` wraps
the backbone and has no position embedding, which its ViT holds instead).

Inputs: H and W multiples of 16.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from models.layers.attention_recording import AttentionRecording
from models.layers.convformer import ConvFormerEncoder, ConvFormerPooling
from models.layers.transunet import CUPDecoder, ResNetV2SkipEncoder
from models.layers.vit_variants import ATTENTION_TYPES, TransformerEncoder
from models.registry import register_model

__all__ = ["ConvFormerTransUNet"]


class ViTEmbedding(nn.Module):
    """1×1 conv patch embedding + learnable position embedding + dropout: (B, C, h, w) → (B, h·w, D)."""

    def __init__(self, in_channels: int, dim: int, grid: tuple[int, int], dropout: float) -> None:
        super().__init__()
        self.grid = grid
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(x.shape[-2:])
        pos = self.pos_embed if grid == self.grid else resample_abs_pos_embed(
            self.pos_embed, list(grid), list(self.grid), num_prefix_tokens=0)
        return self.drop(self.proj(x).flatten(2).transpose(1, 2) + pos)


class ConvFormerTransUNet(AttentionRecording, nn.Module):
    """TransUNet R50-ViT-B/16 with a selectable attention: (B, 1 or 3, H, W) → (B, num_classes, H, W).

    Module docstring for the two transformer paths and the reconstruction choices.
    """

    def __init__(
        self,
        num_classes: int = 4,
        img_size: int = 256,
        in_channels: int = 1,
        attention: str = "vanilla",
        hidden_size: int = 768,
        depth: int = 12,
        heads: int = 12,
        dim_head: int = 64,
        mlp_dim: int = 3072,
        dropout: float = 0.1,
        resnet_layers: Sequence[int] = (3, 4, 9),
        resnet_channels: Sequence[int] = (256, 512, 1024),
        stem_channels: int = 64,
        head_channels: int = 512,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        num_skips: int = 3,
        sigma_min: float = 0.003,
        sigma_max: float = 0.4,
        share_layerscale: bool = True,
        layerscale_init: float = 1e-4,
        reattention_norm: bool = False,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        if img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
        self.num_classes, self.img_size, self.in_channels = num_classes, img_size, in_channels
        self.attention = attention
        self.stem_in_channels = 3 if in_channels == 1 else in_channels
        self.encoder = ResNetV2SkipEncoder(self.stem_in_channels, resnet_layers, resnet_channels, stem_channels)
        features = self.encoder.out_channels
        if attention == "convformer":
            self.embedding = ConvFormerPooling(features, hidden_size, num_downsamples=0)
            self.transformer = ConvFormerEncoder(hidden_size, depth, heads, dim_head, mlp_dim, sigma_min, sigma_max)
        else:
            grid = (img_size // 16, img_size // 16)
            self.embedding = ViTEmbedding(features, hidden_size, grid, dropout)
            self.transformer = TransformerEncoder(
                hidden_size, depth, heads, dim_head, mlp_dim, dropout, attention, share_layerscale, layerscale_init,
                qkv_bias=True, act_layer=nn.GELU, norm_eps=1e-6, final_norm=True, reattention_norm=reattention_norm)
            for block in self.transformer.blocks:  # TransUNet's Mlp init
                for fc in (block.mlp.fc1, block.mlp.fc2):
                    nn.init.xavier_uniform_(fc.weight)
                    nn.init.normal_(fc.bias, std=1e-6)
        self.decoder = CUPDecoder(hidden_size, num_classes, self.encoder.skip_channels, head_channels,
                                  decoder_channels, num_skips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.stem_in_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        elif x.shape[1] != self.stem_in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        x, skips = self.encoder(x)  # (B, 1024, H/16, W/16)
        h, w = x.shape[-2:]
        x = self.transformer(self.embedding(x))  # convformer: (B, D, h, w); else tokens (B, h·w, D)
        if x.ndim == 3:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return self.decoder(x, skips)


# --------------------------------------------------------------------------- registry
@register_model(input_size=(1, 256, 256), paper="convformer")
def convformer_transunet(**kwargs) -> ConvFormerTransUNet:
    """ConvFormer Table 1 TransUNet host (R50-ViT-B/16, 256², reconstructed); ``attention`` selects the variant.

    Parameters at 1 channel / 4 classes (ours, regression values): 105,322,436 vanilla,
    105,325,892 reattention (1,728 of them the shared layer's frozen unused h×h matrices),
    105,323,972 layerscale, 105,338,996 refiner, 281,276,756 convformer.
    """
    return ConvFormerTransUNet(**kwargs)


@register_model(input_size=(1, 64, 64), paper="convformer")
def convformer_transunet_test(**kwargs) -> ConvFormerTransUNet:
    """Tiny TransUNet host for tests: 64², one ResNet block per stage, width 64, one transformer block."""
    config = dict(img_size=64, hidden_size=64, depth=1, heads=2, dim_head=32, mlp_dim=128,
                  resnet_layers=(1, 1, 1), resnet_channels=(128, 256, 512), stem_channels=32,
                  head_channels=64, decoder_channels=(32, 16, 16, 8))
    config.update(kwargs)
    return ConvFormerTransUNet(**config)
