"""Cross-shaped window self-attention with LePE, and the CSWin transformer block.

CSWin Transformer (Dong et al., arXiv 2107.00652), as used by CSWin-UNet
(arXiv 2407.18070). All tensors are channels-last maps ``(B, H, W, C)``.

Layout facts that pretrained weights and the official fixtures depend on:

* one Linear makes Q, K and V: output channels ``[0:C]`` are Q, ``[C:2C]`` K, ``[2C:3C]`` V;
* with two branches, branch 0 takes the first C/2 channels of each of Q, K, V and
  attends inside **vertical** stripes (full height × ``split_size``), branch 1 the
  last C/2 inside **horizontal** stripes (``split_size`` × full width); each branch
  has ``num_heads / 2`` heads of contiguous ``head_dim`` channels. (The paper lists
  the horizontal group first; the code's order is followed.)
* LePE is a depthwise 3×3 convolution (with bias, zero padding) on V *inside each
  stripe window*, added to the attention output; it never crosses stripes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

__all__ = ["StripeAttention", "CrossShapedWindowAttention", "CSWinBlock"]


def _to_windows(x: torch.Tensor, win_h: int, win_w: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nWin, win_h, win_w, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // win_h, win_h, w // win_w, win_w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, win_h, win_w, c)


def _from_windows(x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: (B·nWin, win_h, win_w, C) → (B, H, W, C)."""
    win_h, win_w, c = x.shape[1:]
    x = x.view(b, h // win_h, w // win_w, win_h, win_w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class StripeAttention(nn.Module):
    """Multi-head attention inside non-overlapping windows, plus LePE on V.

    ``orientation``: ``"vertical"`` (windows H × split), ``"horizontal"`` (split × W)
    or ``"full"`` (the whole map). Inputs q, k, v: (B, H, W, dim) → (B, H, W, dim).
    Per window (Eq. of CSWin): ``softmax(q·kᵀ·scale)·v + LePE(v)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        orientation: str,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if orientation not in ("vertical", "horizontal", "full"):
            raise ValueError(f"orientation must be vertical/horizontal/full, got {orientation!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.split_size = dim, num_heads, split_size
        self.orientation = orientation
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def window_size(self, h: int, w: int) -> tuple[int, int]:
        if self.orientation == "full":
            return h, w
        if self.orientation == "vertical":
            win = (h, self.split_size)
        else:
            win = (self.split_size, w)
        if h % win[0] or w % win[1]:
            raise ValueError(
                f"CSWin stripe width {self.split_size} must divide the feature map {h}×{w}; "
                "choose an input size (or split_size) so every stage's map is a multiple of it"
            )
        return win

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        win_h, win_w = self.window_size(h, w)
        n = win_h * win_w

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B', win_h, win_w, C) → (B', heads, n, hd)
            return t.reshape(-1, n, self.num_heads, self.head_dim).transpose(1, 2)

        qw, kw, vw = (_to_windows(t, win_h, win_w) for t in (q, k, v))
        lepe = self.lepe(vw.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B', win_h, win_w, C)
        out = F.scaled_dot_product_attention(
            heads(qw), heads(kw), heads(vw),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        out = out + heads(lepe)
        out = out.transpose(1, 2).reshape(-1, win_h, win_w, c)
        return _from_windows(out, b, h, w)


class CrossShapedWindowAttention(nn.Module):
    """qkv projection → vertical + horizontal stripe branches (or one full branch) → proj.

    x: (B, H, W, C) → (B, H, W, C). ``full_attention`` selects the single-branch
    form the released code uses in the last stage (or where the map equals the stripe).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        full_attention: bool = False,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if full_attention:
            self.branches = nn.ModuleList(
                [StripeAttention(dim, num_heads, split_size, "full", qk_scale, attn_drop)]
            )
        else:
            if num_heads % 2 or dim % 2:
                raise ValueError(f"two-branch CSWin attention needs even dim and heads, got {dim}, {num_heads}")
            self.branches = nn.ModuleList(
                [
                    StripeAttention(dim // 2, num_heads // 2, split_size, orientation, qk_scale, attn_drop)
                    for orientation in ("vertical", "horizontal")
                ]
            )
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        width = self.dim // len(self.branches)
        outs = [
            branch(*(t[..., i * width : (i + 1) * width] for t in (q, k, v)))
            for i, branch in enumerate(self.branches)
        ]
        return self.proj_drop(self.proj(torch.cat(outs, dim=-1)))


class CSWinBlock(nn.Module):
    """Pre-norm CSWin transformer block (CSWin-UNet Eq. 1–2).

    X̂ = CSWin-Attention(LN(X)) + X;  Y = MLP(LN(X̂)) + X̂. x: (B, H, W, C) → (B, H, W, C).
    The MLP (Linear → GELU → Dropout → Linear → Dropout, keys ``mlp.fc1``/``mlp.fc2``) and
    DropPath are timm's, as in the release (its own Mlp class computes the same).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        full_attention: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossShapedWindowAttention(
            dim, num_heads, split_size, full_attention, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
