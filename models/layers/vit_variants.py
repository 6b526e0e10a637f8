"""Token transformers with the anti-collapse attention variants ConvFormer compares with (spec §2.7).

Pre-LN ViT blocks on token sequences (B, N, C), as the ConvFormer release builds
its SETR baselines (xianlin7/ConvFormer @ 80e1b4b, ``models/SETR.py``):

* ``"vanilla"``: softmax attention (``Attention``).
* ``"reattention"`` (DeepViT, ``Attention_deepvit``): softmax, then a learnable
  h×h mixing across heads (no bias). The release also holds a second h×h matrix
  (``proj_pre``) that its forward never uses; it is kept, frozen, for the parameter
  count. Its heat-map plotting call is removed. ``reattention_norm=True`` adds
  DeepViT's BatchNorm2d(h) after the mixing (not in the release).
* ``"layerscale"`` (CaiT, ``Transformer_cait``): vanilla attention with
  x + γ₁⊙Attn, x + γ₂⊙FFN, γ = 1e-4; one γ pair shared by all layers as released
  (``share_layerscale=False``: one pair per layer).
* ``"refiner"`` (``Attention_refiner``): the softmax maps (h channels) pass through
  DLA (1×1 conv h→3h + BN + ReLU6, depthwise 3×3 + BN + ReLU6, 1×1 conv 3h→h + BN,
  plus identity) and a BatchNorm2d(h).
* ``"convformer"`` is the 2D :class:`models.layers.convformer.ConvFormerEncoder`.

The MLP, LayerScale and DropPath are timm's (exactly the release's FeedForward:
Linear → act → Dropout → Linear → Dropout).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp
from torch import nn

from models.layers.attention_recording import AttentionRecording

__all__ = ["ATTENTION_TYPES", "TOKEN_ATTENTION_KINDS", "DLA", "TokenAttention", "TransformerBlock",
           "TransformerEncoder"]

ATTENTION_TYPES = ("vanilla", "reattention", "layerscale", "refiner", "convformer")
TOKEN_ATTENTION_KINDS = ("vanilla", "reattention", "refiner")


class DLA(nn.Module):
    """Refiner's distributed local attention on h attention maps: (B, h, N, N) → (B, h, N, N).

    1×1 conv h → r·h + BN + ReLU6 → depthwise 3×3 + BN + ReLU6 → 1×1 conv → h + BN, plus the input.
    """

    def __init__(self, channels: int, expand_ratio: int = 3) -> None:
        super().__init__()
        hidden = channels * expand_ratio
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(y)))
        return x + self.bn3(self.project(y))


def refine_softmax_maps(module: nn.Module, attn: torch.Tensor) -> torch.Tensor:
    """The anti-collapse step after the softmax, by ``module.kind`` (§2.7): (B, h, N, M) → (B, h, N, M).

    ``reattention``: ``module.head_mix`` (h × h) mixes the heads, then ``module.head_norm`` if
    set; ``refiner``: ``module.adapt_bn(module.refine(attn))``; otherwise unchanged.
    """
    if module.kind == "reattention":
        attn = torch.einsum("gh,bhij->bgij", module.head_mix, attn)
        if module.head_norm is not None:
            attn = module.head_norm(attn)
    elif module.kind == "refiner":
        attn = module.adapt_bn(module.refine(attn))
    return attn


class TokenAttention(nn.Module):
    """Multi-head softmax attention: (B, N, dim) → (B, N, dim).

    qkv = Linear(dim, 3·heads·dim_head), heads split head-major, scale dim_head^-½;
    ``kind`` modifies the softmax maps before they weight V (module docstring).
    Output Linear(inner, dim) + Dropout, or Identity when heads = 1 and dim_head = dim.

    ``record_attention = True`` stores the matrix applied to V (after mixing /
    refinement), detached, as ``last_attention``: (B, heads, N, N).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, kind: str = "vanilla",
                 qkv_bias: bool = False, reattention_norm: bool = False) -> None:
        super().__init__()
        if kind not in TOKEN_ATTENTION_KINDS:
            raise ValueError(f"kind must be one of {TOKEN_ATTENTION_KINDS}, got {kind!r}")
        inner = heads * dim_head
        self.heads, self.dim_head, self.kind = heads, dim_head, kind
        self.scale = dim_head**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        if heads == 1 and dim_head == dim:
            self.proj = nn.Identity()
        else:
            self.proj = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        if kind == "reattention":
            # Head mixing (out_g = Σ_h W[g, h]·attn_h), nn.Linear's default init; the release's
            # unused pre-softmax matrix is kept frozen so the parameter count matches.
            self.head_mix = nn.Parameter(_linear_init(heads))
            self.head_mix_pre = nn.Parameter(_linear_init(heads), requires_grad=False)
            self.head_norm = nn.BatchNorm2d(heads) if reattention_norm else None
        elif kind == "refiner":
            self.refine = DLA(heads)
            self.adapt_bn = nn.BatchNorm2d(heads)
        self.record_attention = False
        self.last_attention: torch.Tensor | None = None

    def attention_maps(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) × 2 → the maps applied to V: (B, h, N, N)."""
        return refine_softmax_maps(self, torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        if self.kind == "vanilla" and not self.record_attention:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = self.attention_maps(q, k)
            if self.record_attention:
                self.last_attention = attn.detach()
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


def _linear_init(features: int) -> torch.Tensor:
    weight = torch.empty(features, features)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's default
    return weight


class TransformerBlock(nn.Module):
    """Pre-LN block: x + ls1(Attn(LN(x))), x + ls2(MLP(LN(x))); (B, N, dim) → (B, N, dim).

    ``ls1`` / ``ls2`` are per-block LayerScales (Identity unless ``layerscale_init``
    is given); an encoder with shared LayerScale passes its own pair to ``forward``.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 kind: str = "vanilla", qkv_bias: bool = False, reattention_norm: bool = False,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, norm_eps: float = 1e-5,
                 layerscale_init: float | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = TokenAttention(dim, heads, dim_head, dropout, kind, qkv_bias, reattention_norm)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act_layer=act_layer, drop=dropout)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, ls1: nn.Module | None = None, ls2: nn.Module | None = None) -> torch.Tensor:
        ls1 = self.ls1 if ls1 is None else ls1
        ls2 = self.ls2 if ls2 is None else ls2
        x = x + self.drop_path(ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(ls2(self.mlp(self.norm2(x))))


class TransformerEncoder(AttentionRecording, nn.Module):
    """``depth`` pre-LN blocks (+ optional final LayerNorm): (B, N, dim) → (B, N, dim).

    ``attention`` ∈ {"vanilla", "reattention", "layerscale", "refiner"}; "layerscale" is
    vanilla attention with γ₁/γ₂ initialised to ``layerscale_init``, one pair for all
    blocks when ``share_layerscale`` (as released: ``ls1.gamma`` / ``ls2.gamma`` here),
    else one pair per block. No residual dropout beyond the MLP/projection dropouts.
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 attention: str = "vanilla", share_layerscale: bool = True, layerscale_init: float = 1e-4,
                 qkv_bias: bool = False, act_layer: Callable[..., nn.Module] = nn.ReLU, norm_eps: float = 1e-5,
                 final_norm: bool = False, reattention_norm: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        if attention == "convformer":
            raise ValueError("attention='convformer' works on 2D maps: use models.layers.convformer.ConvFormerEncoder")
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        kind = "vanilla" if attention == "layerscale" else attention
        per_block_ls = layerscale_init if attention == "layerscale" and not share_layerscale else None
        self.attention = attention
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, dim_head, mlp_dim, dropout, kind, qkv_bias, reattention_norm, act_layer,
                             norm_eps, per_block_ls, drop_path)
            for _ in range(depth)
        )
        shared = attention == "layerscale" and share_layerscale
        self.ls1 = LayerScale(dim, layerscale_init) if shared else None
        self.ls2 = LayerScale(dim, layerscale_init) if shared else None
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, self.ls1, self.ls2)
        return self.norm(x)


# --------------------------------------------------------------------------------------------
# Names of the ConvFormer release's SETR transformers (``Transformer_record`` / ``_deepvit`` /
# ``_cait`` / ``_refiner`` in models/SETR.py): ours → official, relative to the encoder
# --------------------------------------------------------------------------------------------
_ATTN_KEYS = {
    "qkv.": "to_qkv.", "proj.0.": "to_out.0.", "refine.expand.": "DLA.conv_exp.", "refine.bn1.": "DLA.bn1.",
    "refine.dw.": "DLA.depth_sep_conv.", "refine.bn2.": "DLA.bn2.", "refine.project.": "DLA.conv_pro.",
    "refine.bn3.": "DLA.bn3.", "adapt_bn.": "adapt_bn.",
    "head_norm.": "head_norm.",  # reattention_norm=True only: no official counterpart
}
_BLOCK_KEYS = {"norm1.": "0.norm.", "norm2.": "1.norm.", "mlp.fc1.": "1.fn.net.0.", "mlp.fc2.": "1.fn.net.3.",
               "ls1.gamma": "gamma_1", "ls2.gamma": "gamma_2"}  # per-block LayerScale: ours only


def official_token_attention_key(key: str) -> str:
    """:class:`TokenAttention` key → ``Attention`` / ``Attention_deepvit`` / ``Attention_refiner`` key."""
    if key == "head_mix":
        return "proj_post.weight"
    if key == "head_mix_pre":
        return "proj_pre.weight"
    for ours, official in _ATTN_KEYS.items():
        if key.startswith(ours):
            return official + key[len(ours):]
    raise KeyError(f"no official counterpart for attention key {key!r}")


def official_token_encoder_key(key: str) -> str:
    """:class:`TransformerEncoder` key → the release's ``Transformer_*`` key (``layers.{i}.{0,1}``, ``gamma_1/2``)."""
    if key in ("ls1.gamma", "ls2.gamma"):
        return _BLOCK_KEYS[key]
    if key.startswith("norm."):  # final_norm=True only: no counterpart in the release's SETR
        return key
    head, i, rest = (key.split(".", 2) + ["", ""])[:3]
    if head == "blocks":
        if rest.startswith("attn."):
            return f"layers.{i}.0.fn.{official_token_attention_key(rest[5:])}"
        for ours, official in _BLOCK_KEYS.items():
            if rest.startswith(ours):
                return f"layers.{i}.{official}{rest[len(ours):]}"
    raise KeyError(f"no official counterpart for transformer key {key!r}")
