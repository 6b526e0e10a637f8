"""Parameter strides that match the gradients the kernels return (no change to values or memory order).

A depthwise k×k weight ``(C, 1, k, k)`` and a 1×1 weight ``(O, I, 1, 1)`` lie in memory the same
way whether they are called contiguous or channels-last: the two layouts differ only in the
strides of their size-1 dimensions. Fed channels-last activations, the CPU convolution kernels
return these weights' gradients with channels-last strides, and DDP, whose gradient buckets take
each parameter's strides, then warns "Grad strides do not match bucket view strides" in every
process. Storing such weights with channels-last strides from the start removes that mismatch;
the data, its memory order and every result are unchanged (``torch.equal``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["channels_last_strides_for_grads"]


def channels_last_strides_for_grads(conv: nn.Conv2d) -> nn.Conv2d:
    """Give ``conv.weight`` channels-last strides when that leaves its memory order unchanged; returns ``conv``.

    Only depthwise weights (one input channel per group) and 1×1 weights qualify; any other weight is
    left alone, because a different memory order would change the kernels' speed.
    """
    weight = conv.weight
    out_ch, in_ch, kh, kw = weight.shape
    if in_ch != 1 and (kh, kw) != (1, 1):
        return conv
    restrided = torch.empty((out_ch, kh, kw, in_ch), dtype=weight.dtype, device=weight.device).permute(0, 3, 1, 2)
    with torch.no_grad():
        restrided.copy_(weight)
    weight.data = restrided
    return conv
