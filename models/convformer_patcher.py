"""Patcher with ConvFormer's five attention types (ConvFormer Table 1 host).

ConvFormer: Lin, Yan, Deng, Zheng, Yu — MICCAI 2023, arXiv 2309.05674 (spec:
``shared/papers/convformer.md`` §2.6–2.7). Patcher: Ou, Yuan, Huang, Wong, Volpi, Wang,
Wong — MICCAI 2022, arXiv 2206.01741. **Reconstructed from the compiled bytecode of the
authors' private codebase** (``PatcherNet.cpython-36.pyc``, spec §2.6): the release has
no Patcher source and no fixtures exist. The parameter counts pinned in the tests are
ours (regression values). Written from the two papers; no upstream code is used.

Network (256×256 input, defaults = spec §2.6): 4 Patcher blocks (stages), embed dims
(64, 128, 320, 512), heads (1, 2, 5, 8), depths (3, 4, 6, 3), SR ratios (2, 2, 2, 1),
MLP ratio 4 → features (B, Cᵢ, H/4·2⁻ⁱ, W/4·2⁻ⁱ) → MoE head → bilinear ×4 →
logits (B, num_classes, H, W). One Patcher block (:class:`PatcherStage`), map
(B, C_in, H, W) → (B, D, H/s, W/s):

1. zero-pad by the context c = 8 (and bottom/right up to a multiple of the large patch);
   cut large patches P = 32 with their context, (P + 2c)² each, overlapping by 2c →
   (B·L, C_in, P + 2c, P + 2c), L large patches;
2. overlapping patch embedding (SegFormer/PVTv2: conv 7×7/4 in stage 1, 3×3/2 after,
   + LayerNorm) → small-patch tokens (B·L, T², D), T = (P + 2c)/s;
3. ``depth`` pre-LN layers x + Attn(LN x), x + MixFFN(LN x) on each large patch's
   tokens (MixFFN: Linear → 3×3 depthwise conv → GELU → Linear; timm's PVTv2 layer);
4. LayerNorm, drop the context tokens (c/s per side), reassemble the large patches.

Attention (:class:`PatcherAttention`, SegFormer's spatial-reduction attention, q from
the tokens, k/v from the tokens reduced by a sr×sr/sr conv + LN): ``vanilla`` softmax;
``reattention`` / ``layerscale`` / ``refiner`` per spec §2.7 applied to it (LayerScale's
γ pair shared by the layers of a stage); ``convformer`` (bytecode): the same linear
q / SR k, v, then ConvFormer's cosine similarity × row-normalised learnable Gaussian
(σ_g = σ_min + (σ_max − σ_min)·sigmoid(θ_g), θ ~ N(0, 1)), the distance taken from the
query grid to the SR key grid (keys at sr·j + sr//2), both normalised by the query grid
size; LayerNorm, MixFFN and the output projection stay.

Reconstructed (the spec is silent; chosen from the Patcher paper or its SegFormer base):

* one Patcher block per stage; strides 4, 2, 2, 2 (outputs 1/4 … 1/32); the large patch
  and context are counted in pixels of the stage's input map; a map smaller than P in
  one dimension is one large patch of that size; maps are padded to a multiple of P;
* the context tokens run through every layer of the block and are cropped after the
  stage LayerNorm; convs (embedding, depthwise) see zero padding at large-patch borders;
* SegFormer details: q/kv bias, attention/projection dropout 0, stochastic depth 0.1
  (linear over all layers), SegFormer/PVT init (Linear trunc-normal 0.02, LN 1/0, conv
  N(0, √(2/fan_out))) in the encoder; Refiner's DLA keeps PyTorch defaults;
* MoE head: each stage feature is an expert, 1×1 conv Cᵢ → ``decoder_dim`` (256),
  bilinear to 1/4; the gate takes the concatenated experts, 1×1 conv 4·E → E + BN + ReLU,
  1×1 conv E → 4, softmax over experts; pixel-wise weighted sum → Dropout 0.1 → 1×1 conv
  → classes → bilinear ×4 (align_corners=False);
* in_channels goes straight into the first patch embedding (no repeat);
* Re-attention has no frozen unused pre-softmax matrix (a quirk of SETR's release only).

Deviation: the row-normalised Gaussian is computed as softmax(−dis / 2σ²) over the keys,
identical to exp(·)/Σ exp(·) but finite when no SR key is near a query (small σ on a
coarse key grid underflows the plain form to 0/0).

From timm: PVTv2's spatial-reduction ``Attention`` (subclassed), MixFFN
(``MlpWithDepthwiseConv``), ``OverlapPatchEmbed``, ``LayerScale``, ``DropPath``. Hand-written,
because timm has none of them: the attention variants on SR attention (its Attention is
softmax only), the large-patch/context tiling, and the MoE head.

Inputs: H and W multiples of 32.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale
from timm.models.pvt_v2 import Attention as SRAttention
from timm.models.pvt_v2 import MlpWithDepthwiseConv, OverlapPatchEmbed
from torch import nn

from models.layers.attention_recording import AttentionRecording
from models.layers.constant_cache import ConstantCache
from models.layers.convformer import ConvBNReLU, cosine_similarity
from models.layers.drop_path import drop_path_schedule
from models.layers.init import init_linear_and_layernorm
from models.layers.vit_variants import ATTENTION_TYPES, DLA, refine_softmax_maps
from models.registry import register_model

__all__ = ["ConvFormerPatcher", "PatcherAttention", "PatcherLayer", "PatcherStage", "MoEHead",
           "reduced_grid_distance"]


def reduced_grid_distance(height: int, width: int, sr_ratio: int, device=None,
                          dtype=torch.float32) -> torch.Tensor:
    """Squared normalised distance from an H×W query grid to its SR key grid: (H·W, ⌊H/sr⌋·⌊W/sr⌋).

    Query (y, x) on the integer grid; key (i, j) at (sr·i + sr//2, sr·j + sr//2);
    dis = (Δy/H)² + (Δx/W)², both row-major. With sr = 1 it is ConvFormer's grid distance.
    """
    def axis(n: int) -> torch.Tensor:
        queries = torch.arange(n, device=device, dtype=torch.float32)
        keys = torch.arange(n // sr_ratio, device=device, dtype=torch.float32) * sr_ratio + sr_ratio // 2
        return ((queries[:, None] - keys[None, :]) / n) ** 2  # (n, n // sr)

    dy, dx = axis(height), axis(width)
    dis = dy[:, None, :, None] + dx[None, :, None, :]  # (H, W, Hk, Wk)
    return dis.reshape(height * width, -1).to(dtype)


class PatcherAttention(SRAttention):
    """Spatial-reduction attention with a selectable map: (B, N, dim), (h, w) → (B, N, dim).

    timm's PVTv2 ``Attention`` (= SegFormer's efficient self-attention: q, kv Linear, sr
    conv + LN, proj Linear) with ``kind`` ∈ ``ATTENTION_TYPES`` ("layerscale" is vanilla
    here; its γ live in the block). ``record_attention = True`` stores the map applied to
    V, detached, as ``last_attention``: (B, heads, N, N_k), N_k = ⌊h/sr⌋·⌊w/sr⌋.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int = 1, kind: str = "vanilla", qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, sigma_min: float = 0.003, sigma_max: float = 0.4,
                 reattention_norm: bool = False, eps: float = 1e-4) -> None:
        super().__init__(dim, num_heads=heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)
        if kind not in ATTENTION_TYPES:
            raise ValueError(f"kind must be one of {ATTENTION_TYPES}, got {kind!r}")
        self.kind = "vanilla" if kind == "layerscale" else kind
        self.sr_ratio = sr_ratio
        if self.kind == "reattention":
            self.head_mix = nn.Parameter(torch.empty(heads, heads))  # out_g = Σ_h W[g, h]·attn_h
            nn.init.kaiming_uniform_(self.head_mix, a=math.sqrt(5))  # nn.Linear's default
            self.head_norm = nn.BatchNorm2d(heads) if reattention_norm else None
        elif self.kind == "refiner":
            self.refine = DLA(heads)
            self.adapt_bn = nn.BatchNorm2d(heads)
        elif self.kind == "convformer":
            if not 0 < sigma_min < sigma_max:
                raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
            self.sigma_min, self.sigma_max, self.eps = sigma_min, sigma_max, eps
            self.theta = nn.Parameter(torch.randn(heads))
            self._distance_cache = ConstantCache()
        self.record_attention = False
        self.last_attention: torch.Tensor | None = None

    def sigma(self) -> torch.Tensor:
        """Per-head Gaussian widths σ_g ∈ (σ_min, σ_max): (heads,) (convformer only)."""
        return self.sigma_min + (self.sigma_max - self.sigma_min) * torch.sigmoid(self.theta)

    def gaussian_prior(self, height: int, width: int) -> torch.Tensor:
        """Row-normalised Gaussian of the query→key distance: (heads, h·w, N_k) (convformer only)."""
        key = (height, width, self.theta.device, self.theta.dtype)
        dis = self._distance_cache.get(key, lambda: reduced_grid_distance(height, width, self.sr_ratio, *key[2:]))
        return torch.softmax(-(0.5 / self.sigma() ** 2)[:, None, None] * dis, dim=-1)

    def attention_maps(self, q: torch.Tensor, k: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        """(B, h, N, d), (B, h, N_k, d) → the map applied to V: (B, h, N, N_k)."""
        if self.kind == "convformer":
            return cosine_similarity(q, k, self.eps) * self.gaussian_prior(*feat_size)
        return refine_softmax_maps(self, torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1))

    def forward(self, x: torch.Tensor, feat_size: Sequence[int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = feat_size
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr is not None:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.kind == "vanilla" and not self.record_attention:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = self.attention_maps(q, k, (h, w))
            if self.record_attention:
                self.last_attention = attn.detach()
            out = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class PatcherLayer(nn.Module):
    """Pre-LN layer: x + ls1(Attn(LN x)), x + ls2(MixFFN(LN x)); (B, N, dim), (h, w) → (B, N, dim).

    ``ls1`` / ``ls2`` are this layer's LayerScales (Identity unless ``layerscale_init``);
    a stage with shared LayerScale passes its own pair to ``forward``.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: float = 4.0, attention: str = "vanilla",
                 drop_path: float = 0.0, layerscale_init: float | None = None, **attn_kwargs) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PatcherAttention(dim, heads, sr_ratio, attention, **attn_kwargs)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MlpWithDepthwiseConv(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int], ls1: nn.Module | None = None,
                ls2: nn.Module | None = None) -> torch.Tensor:
        ls1 = self.ls1 if ls1 is None else ls1
        ls2 = self.ls2 if ls2 is None else ls2
        x = x + self.drop_path(ls1(self.attn(self.norm1(x), feat_size)))
        return x + self.drop_path(ls2(self.mlp(self.norm2(x), feat_size)))


class PatcherStage(nn.Module):
    """One Patcher block: (B, C_in, H, W) → (B, dim, H/stride, W/stride) (module docstring, steps 1–4)."""

    def __init__(self, in_channels: int, dim: int, stride: int, depth: int, heads: int, sr_ratio: int,
                 mlp_ratio: float = 4.0, large_patch: int = 32, context: int = 8, attention: str = "vanilla",
                 drop_path: Sequence[float] = (), share_layerscale: bool = True, layerscale_init: float = 1e-4,
                 **attn_kwargs) -> None:
        super().__init__()
        if large_patch % stride or context % stride:
            raise ValueError(f"large_patch={large_patch} and context={context} must be multiples of {stride}")
        self.stride, self.large_patch, self.context = stride, large_patch, context
        self.patch_embed = OverlapPatchEmbed(patch_size=7 if stride == 4 else 3, stride=stride,
                                             in_chans=in_channels, embed_dim=dim)
        per_layer_ls = layerscale_init if attention == "layerscale" and not share_layerscale else None
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            PatcherLayer(dim, heads, sr_ratio, mlp_ratio, attention, rates[i], per_layer_ls, **attn_kwargs)
            for i in range(depth)
        )
        shared = attention == "layerscale" and share_layerscale
        self.ls1 = LayerScale(dim, layerscale_init) if shared else None
        self.ls2 = LayerScale(dim, layerscale_init) if shared else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        s, ctx = self.stride, self.context
        if height % s or width % s:
            raise ValueError(f"stage input {height}×{width} is not divisible by the stride {s}")
        ph, pw = min(self.large_patch, height), min(self.large_patch, width)
        nh, nw = -(-height // ph), -(-width // pw)
        x = F.pad(x, (ctx, ctx + nw * pw - width, ctx, ctx + nh * ph - height))
        x = x.unfold(2, ph + 2 * ctx, ph).unfold(3, pw + 2 * ctx, pw)  # (B, C, nh, nw, ph + 2c, pw + 2c)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(b * nh * nw, c, ph + 2 * ctx, pw + 2 * ctx)
        x = self.patch_embed(x)  # (B·L, th, tw, D)
        n, th, tw, dim = x.shape
        x = x.reshape(n, th * tw, dim)
        for blk in self.blocks:
            x = blk(x, (th, tw), self.ls1, self.ls2)
        cs, oh, ow = ctx // s, ph // s, pw // s
        x = self.norm(x).reshape(n, th, tw, dim)[:, cs:cs + oh, cs:cs + ow]
        x = x.reshape(b, nh, nw, oh, ow, dim).permute(0, 5, 1, 3, 2, 4).reshape(b, dim, nh * oh, nw * ow)
        return x[:, :, : height // s, : width // s].contiguous()


class MoEHead(nn.Module):
    """Mixture-of-experts decoder: stage features (B, Cᵢ, H/4·2⁻ⁱ, ·) → logits (B, num_classes, H/4, W/4).

    Expert i = 1×1 conv Cᵢ → dim, bilinear to the first feature's size; gate = 1×1 conv
    (k·dim → dim) + BN + ReLU → 1×1 conv → k weights, softmax over the k experts.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)
        self.gate = nn.Sequential(ConvBNReLU(len(in_channels) * dim, dim, kernel_size=1),
                                  nn.Conv2d(dim, len(in_channels), kernel_size=1))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        experts = [F.interpolate(e(f), size=size, mode="bilinear", align_corners=False)
                   for e, f in zip(self.experts, features, strict=True)]
        weights = torch.softmax(self.gate(torch.cat(experts, dim=1)), dim=1)  # (B, k, h, w)
        fused = (torch.stack(experts, dim=1) * weights.unsqueeze(2)).sum(dim=1)
        return self.classifier(self.dropout(fused))


class ConvFormerPatcher(AttentionRecording, nn.Module):
    """Patcher with a selectable attention: (B, in_channels, H, W) → (B, num_classes, H, W), H, W multiples of 32.

    Module docstring for the structure and the reconstruction choices.
    """

    def __init__(
        self,
        num_classes: int = 4,
        img_size: int = 256,
        in_channels: int = 1,
        attention: str = "vanilla",
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        heads: Sequence[int] = (1, 2, 5, 8),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] = (2, 2, 2, 1),
        mlp_ratio: float = 4.0,
        large_patch: int = 32,
        context: int = 8,
        decoder_dim: int = 256,
        decoder_dropout: float = 0.1,
        drop_path_rate: float = 0.1,
        qkv_bias: bool = True,
        sigma_min: float = 0.003,
        sigma_max: float = 0.4,
        share_layerscale: bool = True,
        layerscale_init: float = 1e-4,
        reattention_norm: bool = False,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        if not len(embed_dims) == len(heads) == len(depths) == len(sr_ratios) == 4:
            raise ValueError("embed_dims, heads, depths and sr_ratios need 4 entries each")
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
        self.num_classes, self.img_size, self.in_channels = num_classes, img_size, in_channels
        self.attention = attention
        with torch.device("cpu"):  # plain floats, also when the model is built under torch.device("meta")
            rates = drop_path_schedule(tuple(depths), drop_path_rate)
        attn_kwargs = dict(qkv_bias=qkv_bias, sigma_min=sigma_min, sigma_max=sigma_max,
                           reattention_norm=reattention_norm)
        chans = [in_channels, *embed_dims]
        self.stages = nn.ModuleList(
            PatcherStage(chans[i], embed_dims[i], 4 if i == 0 else 2, depths[i], heads[i], sr_ratios[i], mlp_ratio,
                         large_patch, context, attention, rates[i], share_layerscale, layerscale_init, **attn_kwargs)
            for i in range(4)
        )
        self.stages.apply(_segformer_init)
        for module in self.stages.modules():  # Refiner's DLA keeps PyTorch's defaults
            if isinstance(module, DLA):
                for m in module.modules():
                    if isinstance(m, nn.Conv2d):
                        m.reset_parameters()
        self.decode_head = MoEHead(embed_dims, num_classes, decoder_dim, decoder_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"Patcher needs H and W divisible by 32, got {tuple(x.shape[-2:])}")
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        logits = self.decode_head(features)
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)


def _segformer_init(module: nn.Module) -> None:
    """SegFormer/PVT init: Linear trunc-normal(0.02), bias 0; LayerNorm 1/0; conv N(0, √(2/fan_out)), bias 0."""
    init_linear_and_layernorm(module)
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- registry
@register_model(input_size=(1, 256, 256), paper="convformer")
def convformer_patcher(**kwargs) -> ConvFormerPatcher:
    """ConvFormer Table 1 Patcher host (256², reconstructed); ``attention`` selects the variant.

    Parameters at 1 channel / 4 classes (ours, regression values): 23,194,184 vanilla,
    23,194,545 reattention, 23,196,232 layerscale, 23,199,145 refiner, 23,194,249 convformer.
    """
    return ConvFormerPatcher(**kwargs)


@register_model(input_size=(1, 64, 64), paper="convformer")
def convformer_patcher_test(**kwargs) -> ConvFormerPatcher:
    """Tiny Patcher + ConvFormer for tests: 64², dims 16–64, one layer per stage, no stochastic depth."""
    config = dict(attention="convformer", img_size=64, embed_dims=(16, 32, 48, 64), heads=(1, 2, 2, 4),
                  depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)
    config.update(kwargs)
    return ConvFormerPatcher(**config)
