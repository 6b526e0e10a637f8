"""Gradients with their parameters' strides, so DDP's gradient buckets match them.

A depthwise weight ``(C, 1, k, k)`` or a 1×1 weight ``(O, I, 1, 1)`` lies in memory the same way
whether its strides are the contiguous or the channels-last ones: they differ only in the
strides of size-1 dimensions. Fed channels-last activations, the CPU convolution kernels return
these weights' gradients with channels-last strides. DDP lays out its gradient buckets with each
parameter's strides and warns "Grad strides do not match bucket view strides" in every process
when a gradient arrives otherwise.

:func:`align_gradient_strides` hooks each such parameter: after its gradient is accumulated (and
before DDP's reducer sees it), a gradient that differs from the parameter only in the strides of
size-1 dimensions is replaced by a view of the same memory with the parameter's strides. Nothing
is copied and no kernel changes, so every value is the same. Restriding the weights instead was
tried: it changes which convolution algorithm oneDNN picks at some shapes, and so the rounding.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["align_gradient_strides"]

_HOOKED = "_repro_gradient_strides_aligned"


def _same_memory_order(grad: torch.Tensor, param: torch.Tensor) -> bool:
    return all(g == p for g, p, size in zip(grad.stride(), param.stride(), param.shape, strict=True)
               if size != 1)


def _restride_gradient(param: torch.Tensor) -> None:
    grad = param.grad
    if grad is None or grad.layout != torch.strided or grad.stride() == param.stride():
        return
    if _same_memory_order(grad, param):
        param.grad = grad.as_strided(param.shape, param.stride(), grad.storage_offset())


def align_gradient_strides(module: nn.Module) -> int:
    """Hook every trainable parameter of ``module`` with a size-1 dimension, once; returns how many were hooked now."""
    hooked = 0
    for param in module.parameters():
        if not param.requires_grad or 1 not in param.shape or getattr(param, _HOOKED, False):
            continue
        param.register_post_accumulate_grad_hook(_restride_gradient)
        setattr(param, _HOOKED, True)
        hooked += 1
    return hooked
