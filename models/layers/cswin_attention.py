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

from models.layers.explicit_attention import explicit_attention

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
        out = _window_attention(heads(qw), heads(kw), heads(vw), self.scale,
                                self.attn_drop if self.training else 0.0)
        out = out + heads(lepe)
        out = out.transpose(1, 2).reshape(-1, win_h, win_w, c)
        return _from_windows(out, b, h, w)


def _reduced_cpu(t: torch.Tensor) -> bool:
    """A bf16/fp16 tensor on the CPU (what CPU autocast's linear layers return)."""
    return t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16)


def _window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                      dropout_p: float) -> torch.Tensor:
    """``softmax(q·kᵀ·scale)·v``: (B', heads, n, hd) ×3 → (B', heads, n, hd), in q's dtype.

    On the CPU without dropout: :func:`~models.layers.explicit_attention.explicit_attention`
    (batched GEMMs; the fused CPU kernel is 1.5–2× slower, forward plus backward, for
    these 49–98-token windows, and slower still in bf16), entirely in q's dtype. With dropout
    on the CPU in bf16/fp16, the products in that dtype and the softmax in float32, through
    autograd. Elsewhere ``F.scaled_dot_product_attention``.
    """
    if q.device.type == "cpu" and dropout_p == 0.0:
        return explicit_attention(q, k, v, scale)
    if not _reduced_cpu(q):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    probs = (torch.matmul(q, k.transpose(-2, -1)).float() * scale).softmax(dim=-1)
    probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs.to(q.dtype), v)


def _lepe_input(v: torch.Tensor) -> torch.Tensor:
    """LePE's depthwise conv runs in float32 on reduced-precision CPU tensors (bf16 gains nothing there)."""
    return v.float() if _reduced_cpu(v) else v


def _autocast_off(t: torch.Tensor):
    return torch.autocast(t.device.type, enabled=False)


class _StripeGather(torch.autograd.Function):
    """qkv map (B, H, W, 3C) → q, k, v stripe windows of both branches, from one pre-allocated buffer.

    Outputs q, k, v, each ``(2, B, nWin, n, C/2)``: branch (0 vertical,
    1 horizontal), window, token, channel. Vertical windows list their tokens as (row,
    column in stripe), horizontal ones as (row in stripe, column); so v's branch 0 viewed
    (B·nWin, H, split, C/2) and branch 1 viewed (B·nWin, split, W, C/2) are dense
    channels-last maps for LePE. Both branches need the same nWin and n, i.e. H == W.
    Forward is two strided copies; backward writes each of the three gradients straight
    into its channels of the map gradient (autograd's own select/permute backward would
    zero-fill and add full-size buffers, and an ``unbind`` would stack them first).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, split: int) -> tuple[torch.Tensor, ...]:
        b, h, w, c3 = qkv.shape
        ctx.split, ctx.shape = split, qkv.shape
        buf = qkv.new_empty(3, 2, b, h // split, h * split, c3 // 6)
        for src, dst in _stripe_pairs(qkv, buf, split):
            dst.copy_(src)
        return tuple(buf.unbind(0))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        grad_qkv = grads[0].new_empty(ctx.shape)
        for part, grad in enumerate(grads):
            for src, dst in _stripe_pairs(grad_qkv, grad.unsqueeze(0), ctx.split, part):
                src.copy_(dst)
        return grad_qkv, None


def _stripe_pairs(qkv: torch.Tensor, buf: torch.Tensor, split: int,
                  part: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(map view, buffer view) of equal shape (P, B, nWin, a, b, C/2) for each branch; see _StripeGather.

    ``buf``: (P, 2, B, nWin, n, C/2) for P = 3 (q, k, v) or, with ``part`` 0/1/2, P = 1 for that one.
    """
    b, h, w, c3 = qkv.shape
    cb = c3 // 6
    m = qkv.view(b, h, w, 3, 2, cb)
    if part is not None:
        m = m[:, :, :, part : part + 1]
    p = m.shape[3]
    vertical = m[:, :, :, :, 0].view(b, h, w // split, split, p, cb).permute(4, 0, 2, 1, 3, 5)
    horizontal = m[:, :, :, :, 1].view(b, h // split, split, w, p, cb).permute(4, 0, 1, 2, 3, 5)
    return [
        (vertical, buf[:, 0].reshape(p, b, w // split, h, split, cb)),
        (horizontal, buf[:, 1].reshape(p, b, h // split, split, w, cb)),
    ]


class _StripeMerge(torch.autograd.Function):
    """attention + LePE of both branches, windows → map (B, H, W, C) of ``attn``'s dtype.

    ``attn``: (2, B, nWin, n, C/2) as ``_StripeGather`` orders it; ``lepe_v``: (B·nWin, H, split, C/2),
    ``lepe_h``: (B·nWin, split, W, C/2). The sum is written straight into the map (two
    ``add(out=)``, in the wider of the input dtypes: bf16 attention plus float32 LePE is rounded
    once); backward is one gather of the map gradient, shared by the three inputs.
    """

    @staticmethod
    def forward(ctx, attn: torch.Tensor, lepe_v: torch.Tensor, lepe_h: torch.Tensor, h: int, w: int,
                split: int) -> torch.Tensor:
        _, b, _, _, cb = attn.shape
        ctx.split, ctx.dims = split, (h, w)
        out = attn.new_empty(b, h, w, 2 * cb)
        pairs = _stripe_pairs_out(out, split)
        lepes = (lepe_v.reshape(pairs[0].shape), lepe_h.reshape(pairs[1].shape))
        for g, dst in enumerate(pairs):
            if torch.compiler.is_compiling():  # Dynamo does not trace a strided ``out=``; Inductor fuses this
                dst.copy_(attn[g].reshape(dst.shape)).add_(lepes[g])
            else:
                torch.add(attn[g].reshape(dst.shape), lepes[g], out=dst)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w = ctx.dims
        grad = grad.contiguous()
        b, cb = grad.shape[0], grad.shape[-1] // 2
        split = ctx.split
        g_attn = grad.new_empty(2, b, h // split, h * split, cb)
        for g, src in enumerate(_stripe_pairs_out(grad, split)):
            g_attn[g].view(src.shape).copy_(src)
        g_v = g_attn[0].view(-1, h, split, cb)
        g_h = g_attn[1].view(-1, split, w, cb)
        return g_attn, g_v, g_h, None, None, None


def _stripe_pairs_out(out: torch.Tensor, split: int) -> list[torch.Tensor]:
    """Per branch, the map ``out`` (B, H, W, C) viewed in window order (B, nWin, a, b, C/2)."""
    b, h, w, c = out.shape
    m = out.view(b, h, w, 2, c // 2)
    vertical = m[:, :, :, 0].view(b, h, w // split, split, c // 2).transpose(1, 2)
    horizontal = m[:, :, :, 1].view(b, h // split, split, w, c // 2)
    return [vertical, horizontal]


class CrossShapedWindowAttention(nn.Module):
    """qkv projection → vertical + horizontal stripe branches (or one full branch) → proj.

    x: (B, H, W, C) → (B, H, W, C). ``full_attention`` selects the single-branch
    form the released code uses in the last stage (or where the map equals the stripe).

    On square maps both branches run as one batched attention call (their windows hold
    the same number of tokens), with the window layout made by one copy in and one copy
    out; non-square maps run each branch through :class:`StripeAttention`. Under CPU
    autocast (bf16) the window attention runs in bf16, and LePE in float32 (see
    :func:`_window_attention`).
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
        qkv = self.qkv(x)
        if len(self.branches) == 1:
            out = self._full(qkv)
        elif x.shape[1] == x.shape[2]:
            out = self._two_branch_square(qkv)
        else:
            q, k, v = qkv.chunk(3, dim=-1)
            width = self.dim // 2
            out = torch.cat([
                branch(*(t[..., i * width : (i + 1) * width] for t in (q, k, v)))
                for i, branch in enumerate(self.branches)
            ], dim=-1)
        return self.proj_drop(self.proj(out))

    def _dropout_p(self, branch: StripeAttention) -> float:
        return branch.attn_drop if self.training else 0.0

    def _full(self, qkv: torch.Tensor) -> torch.Tensor:
        branch = self.branches[0]
        b, h, w, _ = qkv.shape
        out_dtype = qkv.dtype
        with _autocast_off(qkv):
            q, k, v = qkv.view(b, h * w, 3, branch.num_heads, branch.head_dim).unbind(2)  # (B, n, heads, hd)
            out = _window_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), branch.scale,
                                    self._dropout_p(branch))  # (B, heads, n, hd)
            v = _lepe_input(v.reshape(b, h, w, self.dim))
            lepe = branch.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return (out.transpose(1, 2).reshape(b, h, w, self.dim) + lepe).to(out_dtype)

    def _two_branch_square(self, qkv: torch.Tensor) -> torch.Tensor:
        vertical, horizontal = self.branches
        b, h, w, _ = qkv.shape
        split = vertical.split_size
        vertical.window_size(h, w), horizontal.window_size(h, w)  # validate the stripe width
        heads, hd, cb = vertical.num_heads, vertical.head_dim, self.dim // 2
        n = h * split
        with _autocast_off(qkv):
            q, k, v = _StripeGather.apply(qkv, split)  # each (2, B, nWin, n, C/2)
            attn = _window_attention(
                *(t.reshape(-1, n, heads, hd).transpose(1, 2) for t in (q, k, v)),  # (2·B·nWin, heads, n, hd)
                vertical.scale, self._dropout_p(vertical),
            )
            attn = attn.transpose(1, 2).reshape(2, b, h // split, n, cb)
            v_vert, v_horz = _lepe_input(v).unbind(0)
            lepe_v = vertical.lepe(v_vert.reshape(-1, h, split, cb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            lepe_h = horizontal.lepe(v_horz.reshape(-1, split, w, cb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return _StripeMerge.apply(attn, lepe_v, lepe_h, h, w, split)


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
        x = _residual(x, self.attn(self.norm1(x)), self.drop_path)
        return _residual(x, self.mlp(self.norm2(x)), self.drop_path)


def _residual(x: torch.Tensor, y: torch.Tensor, drop_path: DropPath) -> torch.Tensor:
    """``x + drop_path(y)`` with timm's DropPath semantics and random stream, as one ``addcmul`` when active.

    The per-sample mask is drawn exactly as ``timm.layers.drop_path`` draws it (same shape,
    dtype and ``bernoulli_`` call), so a seeded run drops the same samples as the module would.
    """
    p = drop_path.drop_prob
    if p == 0.0 or not drop_path.training:
        return x + y
    keep = 1.0 - p
    mask = y.new_empty((y.shape[0],) + (1,) * (y.ndim - 1)).bernoulli_(keep)
    if keep > 0.0 and drop_path.scale_by_keep:
        mask.div_(keep)
    return torch.addcmul(x, y, mask)
