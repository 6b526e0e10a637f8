"""Simplified linear attention (SLA) of SLAB (arXiv 2405.11582, §2.4 of the spec page).

Per window (Swin form, ``(B·nW, N, C)``) or per image (DeiT form, ``(B, N, C)`` patch tokens
without a class token), with ``h`` heads of ``d = C/h`` channels::

    q, k, v = Linear(C, 3C)(x)            # split q | k | v
    k = k + P                             # P: (1, N, C), zero-initialised
    q, k = relu(q), relu(k)
    o_i = q_i (Σ_j k_jᵀ v_j) / (q_i · Σ_j k_j + 1e-6)   # per head, fp32, autocast off
    o = o + DWC(v)                        # depthwise k×k conv over d channels, shared by heads, bias
    y = Linear(C, C)(o)

No softmax, no d^-½ scale. Hand-written: no torch/timm module computes this attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SimplifiedLinearAttention", "sla_kernel"]


def sla_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU-kernel attention core: ``q, k, v`` ``(B·h, N, d)`` (already ReLU'd) → ``(B·h, N, d)``.

    Evaluates ``q(kᵀv)`` when that is cheaper (N > d), else ``(qkᵀ)v``, as the release does;
    both are the same product. Callers run it in fp32 with autocast disabled.
    """
    n, d = q.shape[-2:]
    z = 1.0 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + eps)  # (B·h, N, 1)
    if n * n * (2 * d) > d * d * (2 * n):
        return (q @ (k.transpose(-2, -1) @ v)) * z
    return ((q @ k.transpose(-2, -1)) @ v) * z


def _pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class SimplifiedLinearAttention(nn.Module):
    """SLA in place of softmax attention: ``(B', N, C)`` → ``(B', N, C)``.

    ``window_size``: the ``(Wh, Ww)`` token grid the positional term ``P`` on K is sized for
    (a Swin window, or the DeiT patch grid, e.g. ``(14, 14)``); ``None`` drops ``P`` (project
    option) and takes the grid from ``forward(x, H, W)`` or a square N. Tokens are in row-major
    order (token ``n = row·W + col``). ``attn_drop`` is accepted and unused, as in the release
    (there is no attention matrix); the release's ``focusing_factor``/``qk_scale`` are omitted.
    Parameter names are the release's (``qkv``, ``proj``, ``dwc``, ``positional_encoding``).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | tuple[int, int] | None = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, kernel_size: int = 5,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.window_size, self.eps = _pair(window_size), eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        if self.window_size is not None:
            n = self.window_size[0] * self.window_size[1]
            self.positional_encoding = nn.Parameter(torch.zeros(1, n, dim))
        else:
            self.register_parameter("positional_encoding", None)

    def _grid(self, n: int, height: int | None, width: int | None) -> tuple[int, int]:
        if height is not None and width is not None:
            grid = (height, width)
        elif self.window_size is not None:
            grid = self.window_size
        else:
            side = round(n**0.5)
            grid = (side, side)
        if grid[0] * grid[1] != n:
            raise ValueError(f"{n} tokens do not form the {grid[0]}×{grid[1]} grid")
        return grid

    def forward(self, x: torch.Tensor, H: int | None = None, W: int | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B', N, C)``; ``H, W``: the token grid (default: ``window_size`` or √N × √N)."""
        if mask is not None:
            raise ValueError("SimplifiedLinearAttention has no attention matrix to mask (use unshifted windows)")
        b, n, c = x.shape
        height, width = self._grid(n, H, W)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.positional_encoding is not None:
            k = k + self.positional_encoding
        q, k = F.relu(q), F.relu(k)
        heads = lambda t: t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2).reshape(-1, n, self.head_dim)
        q, k, v = heads(q), heads(k), heads(v)  # (B'·h, N, d)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = sla_kernel(q.float(), k.float(), v.float(), self.eps)
        grid = v.transpose(1, 2).reshape(-1, self.head_dim, height, width)  # (B'·h, d, H, W)
        out = out + self.dwc(grid).flatten(2).transpose(1, 2)
        out = out.reshape(b, self.num_heads, n, self.head_dim).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out.to(x.dtype)))
