"""Softmax attention over many small windows as batched GEMMs, with a hand-written backward.

For the short sequences of window attention (49–98 tokens, head width 32) the CPU's fused
``scaled_dot_product_attention`` kernel is 1.5–2× slower, forward plus backward, than two
batched matrix products around a softmax (its blocked loop is built for long sequences).
This is that explicit form, the one the CSWin release computes, with a backward that
reuses the saved probabilities and folds the scale into the products:

    forward:  S = scale·Q·Kᵀ,  P = softmax(S),  O = P·V
    backward: dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P∘(dP − rowsum(dP∘P)),  dQ = scale·dS·K,  dK = scale·dSᵀ·Q

Every step runs in the inputs' dtype, with no casts. For bf16/fp16 inputs (CPU autocast)
the products accumulate in float32 and the softmax and its backward take and return the
reduced dtype, so the saved probabilities are the bf16 ones the second product uses anyway;
a float32 softmax between bf16 products cost four casts per call, about 3 % of a bf16
CSWin-UNet step on a CPU with AMX.
"""
from __future__ import annotations

import torch

__all__ = ["explicit_attention"]


class _ExplicitAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        m, n, _ = q.shape
        scores = torch.baddbmm(q.new_empty(m, n, k.shape[1]), q, k.transpose(1, 2), beta=0.0, alpha=scale)
        probs = torch.softmax(scores, dim=-1)
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, probs)
        return torch.bmm(probs, v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, probs = ctx.saved_tensors  # grad has the output's dtype: autograd casts it to that
        grad_v = torch.bmm(probs.transpose(1, 2), grad)
        grad_probs = torch.bmm(grad, v.transpose(1, 2))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q = torch.baddbmm(torch.empty_like(q), grad_scores, k, beta=0.0, alpha=ctx.scale)
        grad_k = torch.baddbmm(torch.empty_like(k), grad_scores.transpose(1, 2), q, beta=0.0, alpha=ctx.scale)
        return grad_q, grad_k, grad_v, None


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale·q·kᵀ)·v``: q (…, n, d), k and v (…, n_k, d) → (…, n, d), in v's dtype.

    The leading dimensions are flattened into one batch (a copy where the layout needs one).
    Runs in the inputs' dtype whether or not autocast is on. No dropout: callers with
    attention dropout use their own path.
    """
    lead = q.shape[:-2]
    q3, k3, v3 = (t.reshape(-1, *t.shape[-2:]) for t in (q, k, v))
    with torch.autocast(q.device.type, enabled=False):
        out = _ExplicitAttention.apply(q3, k3, v3, scale)
    return out.view(*lead, q.shape[-2], v.shape[-1])
