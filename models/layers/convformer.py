"""ConvFormer layers (Lin et al., MICCAI 2023, arXiv 2309.05674): pooling, CSA, CFFN, blocks.

Every module works on 2D maps (B, C, H, W); there are no tokens, no positional
embedding and no LayerNorm. Written from the project specification
(``shared/papers/convformer.md`` §2.2–2.5) and checked against the fixtures of the
release (xianlin7/ConvFormer @ 80e1b4b, ``models/SETR.py``, ``transformer2d_parts.py``).

* :class:`ConvFormerPooling`: the tokeniser, 3×3 conv + BN + ReLU, then ``n`` ×
  [max-pool 2, 3×3 conv + BN + ReLU] (``CNNEncoder2``; the release hard-wires n = 3).
* :class:`CNNStyleAttention` (CSA): 3×3-conv Q/K/V, cosine similarity (no softmax)
  times a row-normalised learnable Gaussian of the grid distance, 1×1 conv + BN +
  ReLU output; **no residual** (the block adds it).
* :class:`ConvFeedForward` (CFFN): two 1×1 conv + BN + ReLU.
* :class:`ConvFormerBlock` / :class:`ConvFormerEncoder`: x + CSA(x), then x + CFFN(x).

Deviations from the release (identical outputs where the release runs at all):
the distance map is built from the **actual** H×W of the input at run time (the
release builds it once from ``num_patches`` and fails on any other size, issues
#4/#12) and cached per (H, W, device, dtype) outside the state_dict (the release
calls ``.cuda()`` in ``__init__``).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from models.layers.attention_recording import AttentionRecording
from models.layers.constant_cache import ConstantCache

__all__ = [
    "ConvBNReLU",
    "ConvFormerPooling",
    "CNNStyleAttention",
    "ConvFeedForward",
    "ConvFormerBlock",
    "ConvFormerEncoder",
    "grid_distance",
]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) → BatchNorm2d → ReLU: (B, C_in, H, W) → (B, C_out, H, W) (k odd, 'same' padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(inplace=True),
        ))


class ConvFormerPooling(nn.Module):
    """Pooling module (tokeniser): (B, C_in, H, W) → (B, out, ⌊H/2ⁿ⌋, ⌊W/2ⁿ⌋), n = ``num_downsamples``.

    ``stem`` = 3×3 conv C_in → widths[0]; ``downs[k]`` = MaxPool2d(2) → 3×3 conv, the
    channels following ``[widths[0], …, widths[n-1], out]``. With n = 3 and the default
    widths: C_in → 64 → 128 → 256 → out, as released. With n = 0 the stem maps C_in → out.
    """

    def __init__(self, in_channels: int, out_channels: int, num_downsamples: int = 3,
                 widths: Sequence[int] = (64, 128, 256)) -> None:
        super().__init__()
        if num_downsamples < 0 or len(widths) < num_downsamples:
            raise ValueError(f"num_downsamples={num_downsamples} needs at least that many widths, got {tuple(widths)}")
        chain = [in_channels, *widths[:num_downsamples], out_channels]
        self.num_downsamples = num_downsamples
        self.stem = ConvBNReLU(chain[0], chain[1])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBNReLU(chain[k], chain[k + 1])) for k in range(1, len(chain) - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for down in self.downs:
            x = down(x)
        return x


def grid_distance(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Squared normalised distance between the cells of an H×W grid: (H·W, H·W).

    dis_ij = ((y_i − y_j)/H)² + ((x_i − x_j)/W)², tokens row-major (n = y·W + x);
    the release's ``relative_pos_dis`` (computed in float32, then cast).
    """
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).float() / height
    dx = (xs[:, None] - xs[None, :]).float() / width
    return (dy**2 + dx**2).to(dtype)


def cosine_similarity(q: torch.Tensor, k: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The release's CSA similarity: (…, N, d), (…, M, d) → (…, N, M) in [−1, 1], no softmax.

    ``q·k / (√(‖q‖² + eps)·√(‖k‖² + eps) + eps)``.
    """
    q_norm = torch.sqrt((q**2).sum(-1) + eps)
    k_norm = torch.sqrt((k**2).sum(-1) + eps)
    return (q @ k.transpose(-1, -2)) / (q_norm[..., :, None] * k_norm[..., None, :] + eps)


class CNNStyleAttention(nn.Module):
    """CNN-style self-attention (CSA): (B, dim, H, W) → (B, dim, H, W), no residual.

    Q, K, V = one 3×3 conv dim → 3·heads·dim_head (no bias), split head-major
    (channel c → head c // dim_head), tokens row-major; A = cosine similarity
    q·k / (√(‖q‖² + 1e-4)·√(‖k‖² + 1e-4) + 1e-4) (no softmax); per head g a Gaussian
    M_g = exp(−dis / 2σ_g²) row-normalised, σ_g = σ_min + (σ_max − σ_min)·sigmoid(θ_g),
    θ ~ N(0, 1); out = (A ⊙ M̃) V → 1×1 conv + BN + ReLU (Identity when heads = 1 and
    dim_head = dim, as released). ``sigma_max`` is the paper's α (spec §2.3).

    ``record_attention = True`` stores the applied matrix A ⊙ M̃, detached, as
    ``last_attention``: (B, heads, H·W, H·W).
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, sigma_min: float = 0.003,
                 sigma_max: float = 0.4, eps: float = 1e-4) -> None:
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.sigma_min, self.sigma_max, self.eps = sigma_min, sigma_max, eps
        self.qkv = nn.Conv2d(dim, 3 * inner, kernel_size=3, padding=1, bias=False)
        self.theta = nn.Parameter(torch.randn(heads))
        self.proj = nn.Identity() if (heads == 1 and dim_head == dim) else ConvBNReLU(inner, dim, kernel_size=1)
        self.record_attention = False
        self.last_attention: torch.Tensor | None = None
        self._distance_cache = ConstantCache()

    def distance(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (H·W, H·W) distance map for this grid, computed once per (H, W, device, dtype)."""
        return self._distance_cache.get((height, width, device, dtype),
                                        lambda: grid_distance(height, width, device, dtype))

    def sigma(self) -> torch.Tensor:
        """Per-head Gaussian widths σ_g ∈ (σ_min, σ_max): (heads,)."""
        return self.sigma_min + (self.sigma_max - self.sigma_min) * torch.sigmoid(self.theta)

    def gaussian_prior(self, height: int, width: int) -> torch.Tensor:
        """Row-normalised M̃: (heads, H·W, H·W)."""
        dis = self.distance(height, width, self.theta.device, self.theta.dtype)
        m = torch.exp(-(1.0 / (2.0 * self.sigma() ** 2))[:, None, None] * dis)
        return m / m.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, self.dim_head, h * w).transpose(-1, -2)
                   for t in self.qkv(x).chunk(3, dim=1))  # each (B, g, N, d)
        attn = cosine_similarity(q, k, self.eps) * self.gaussian_prior(h, w)
        if self.record_attention:
            self.last_attention = attn.detach()
        out = (attn @ v).transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)
        return self.proj(out)


class ConvFeedForward(nn.Module):
    """CFFN: 1×1 conv dim → mlp_dim + BN + ReLU → 1×1 conv → dim + BN + ReLU; (B, dim, H, W) → same."""

    def __init__(self, dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = ConvBNReLU(dim, mlp_dim, kernel_size=1)
        self.fc2 = ConvBNReLU(mlp_dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class ConvFormerBlock(nn.Module):
    """x ← x + CSA(x); x ← x + CFFN(x). (B, dim, H, W) → (B, dim, H, W); no normalisation."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, sigma_min: float = 0.003,
                 sigma_max: float = 0.4) -> None:
        super().__init__()
        self.attn = CNNStyleAttention(dim, heads, dim_head, sigma_min, sigma_max)
        self.ffn = ConvFeedForward(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class ConvFormerEncoder(AttentionRecording, nn.Module):
    """``depth`` ConvFormer blocks (``CNNTransformer_record``): (B, dim, H, W) → (B, dim, H, W)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, sigma_min: float = 0.003,
                 sigma_max: float = 0.4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvFormerBlock(dim, heads, dim_head, mlp_dim, sigma_min, sigma_max) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


# --------------------------------------------------------------------------------------------
# Names of the release (xianlin7/ConvFormer @ 80e1b4b): ours → official, relative to each module
# --------------------------------------------------------------------------------------------
def _bn_tail(rest: str) -> str:
    if rest.split(".")[0] not in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        raise KeyError(rest)
    return rest


def _conv_bn_key(key: str, conv: str, bn: str) -> str:
    """``conv.weight`` / ``bn.<x>`` of a :class:`ConvBNReLU` → ``<conv>.weight`` / ``<bn>.<x>``."""
    part, _, rest = key.partition(".")
    if part == "conv" and rest == "weight":
        return f"{conv}.weight"
    if part == "bn":
        return f"{bn}.{_bn_tail(rest)}"
    raise KeyError(key)


def official_pooling_key(key: str) -> str:
    """:class:`ConvFormerPooling` key → ``CNNEncoder2`` key (``inc``, ``down{k}.maxpool_conv.1``)."""
    try:
        if key.startswith("stem."):
            return _conv_bn_key(key[5:], "inc.single_conv.0", "inc.single_conv.1")
        head, k, one, rest = key.split(".", 3)
        if head == "downs" and one == "1":
            prefix = f"down{int(k) + 1}.maxpool_conv.1.single_conv"
            return _conv_bn_key(rest, f"{prefix}.0", f"{prefix}.1")
    except (KeyError, ValueError):
        pass
    raise KeyError(f"no official counterpart for pooling key {key!r}")


def official_csa_key(key: str) -> str:
    """:class:`CNNStyleAttention` key → ``CNNAttention`` key (``to_qkv``, ``headsita``, ``to_out``)."""
    if key == "theta":
        return "headsita"
    if key == "qkv.weight":
        return "to_qkv.weight"
    if key.startswith("proj."):
        try:
            return _conv_bn_key(key[5:], "to_out.0", "to_out.1")
        except KeyError:
            pass
    raise KeyError(f"no official counterpart for CSA key {key!r}")


def official_cffn_key(key: str) -> str:
    """:class:`ConvFeedForward` key → ``CNNFeedForward`` key (``net.0/1/3/4``)."""
    try:
        if key.startswith("fc1."):
            return _conv_bn_key(key[4:], "net.0", "net.1")
        if key.startswith("fc2."):
            return _conv_bn_key(key[4:], "net.3", "net.4")
    except KeyError:
        pass
    raise KeyError(f"no official counterpart for CFFN key {key!r}")


def official_convformer_encoder_key(key: str) -> str:
    """:class:`ConvFormerEncoder` key → ``CNNTransformer_record`` key (``layers.{i}.0`` CSA, ``.1`` CFFN)."""
    head, i, part, rest = (key.split(".", 3) + ["", "", ""])[:4]
    if head == "blocks" and part == "attn":
        return f"layers.{i}.0.{official_csa_key(rest)}"
    if head == "blocks" and part == "ffn":
        return f"layers.{i}.1.{official_cffn_key(rest)}"
    raise KeyError(f"no official counterpart for ConvFormer encoder key {key!r}")
