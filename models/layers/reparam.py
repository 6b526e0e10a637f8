"""Inference-time re-parameterisation of SLAB's RepBN (spec §2.6): fold the norm into neighbouring layers.

In eval mode RepBN is a per-channel affine map ``RepBN(x) = a ⊙ x + b`` with
``a = w/√(σ² + ε) + α`` and ``b = β − w·μ/√(σ² + ε)`` (running statistics). Every function
returns a NEW layer (inputs are not modified) computed in float64 and cast back; the caller
swaps it in and replaces the norm by ``nn.Identity``. Merge order for a whole network (the
release's README): blocks, patch merging, patch embedding, then the final norm.

* pre-norm, norm → Linear (block ``norm1 → qkv``, ``norm2 → fc1``, patch merging ``norm →
  reduction``, ``final norm → avg-pool → head``): :func:`fold_repbn_into_linear`;
* post-norm, Conv2d → norm (patch embedding): :func:`fold_repbn_into_conv`; the Linear analogue
  :func:`fold_repbn_after_linear`;
* the final norm into the last stage's residual stream (the release's Swin merge):
  :func:`scale_linear_output` on every layer writing the stream, :func:`scale_linear_input` on
  every (already folded) layer reading it, see :func:`fold_repbn_into_residual_stream`.

Hand-written: timm/torch have no RepBN fold (torch's ``fuse_conv_bn_eval`` lacks α and token layout).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.layers.repbn import ProgressiveNorm, RepBN

__all__ = [
    "repbn_affine",
    "fold_repbn_into_linear",
    "fold_repbn_after_linear",
    "fold_repbn_into_conv",
    "scale_linear_output",
    "scale_linear_input",
    "fold_repbn_into_residual_stream",
]

Norm = RepBN | ProgressiveNorm | nn.BatchNorm1d


def _bn_and_alpha(norm: Norm) -> tuple[nn.BatchNorm1d, torch.Tensor]:
    if isinstance(norm, ProgressiveNorm):
        if norm.eval_mixture and norm.gamma > 0:
            raise ValueError("ProgressiveNorm(eval_mixture=True) still mixes in LayerNorm (gamma > 0): not foldable")
        norm = norm.repbn
    if isinstance(norm, RepBN):
        return norm.bn, norm.alpha.detach().double().reshape(())
    return norm, torch.zeros((), dtype=torch.float64, device=norm.running_var.device)


def repbn_affine(norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``(a, b)``, each ``(C,)`` float64, with ``norm(x) = a ⊙ x + b``.

    Takes a :class:`RepBN`, a :class:`ProgressiveNorm` (its eval path, the RepBN; refused while it
    evaluates a γ > 0 mixture) or a plain ``BatchNorm1d`` (α = 0).
    """
    bn, alpha = _bn_and_alpha(norm)
    inv_std = (bn.running_var.double() + bn.eps).rsqrt()
    weight = bn.weight.detach().double() if bn.affine else torch.ones_like(inv_std)
    bias = bn.bias.detach().double() if bn.affine else torch.zeros_like(inv_std)
    return weight * inv_std + alpha, bias - weight * bn.running_mean.double() * inv_std


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _bias64(layer: nn.Module, size: int) -> torch.Tensor:
    bias = getattr(layer, "bias", None)
    if bias is None:
        return torch.zeros(size, dtype=torch.float64, device=layer.weight.device)
    return bias.detach().double()


def fold_repbn_into_linear(norm: Norm, linear: nn.Linear) -> nn.Linear:
    """``linear(norm(x))`` as one Linear: ``W' = W·diag(a)``, ``b' = W·b + c`` (a bias is added if absent)."""
    a, b = repbn_affine(norm)
    weight = linear.weight.detach().double()
    return _new_linear(weight * a, weight @ b + _bias64(linear, weight.shape[0]), linear)


def fold_repbn_after_linear(linear: nn.Linear, norm: Norm) -> nn.Linear:
    """``norm(linear(x))`` as one Linear: ``W' = diag(a)·W``, ``b' = a ⊙ c + b``."""
    return scale_linear_output(linear, *repbn_affine(norm))


def fold_repbn_into_conv(conv: nn.Conv2d, norm: Norm, release_formula: bool = False) -> nn.Conv2d:
    """``norm(conv(x))`` (the patch embedding: conv, flatten to tokens, norm) as one Conv2d.

    ``W'_o = a_o·W_o`` and ``b'_o = a_o·c_o + b_o``. ``release_formula=True`` reproduces the
    release's bias ``w(c − μ)/√(σ² + ε) + β``, which drops ``α·c_o`` (wrong unless the conv has
    no bias; kept only to compare with converted checkpoints).
    """
    a, b = repbn_affine(norm)
    c = _bias64(conv, conv.out_channels)
    bias = (a - _bn_and_alpha(norm)[1]) * c + b if release_formula else a * c + b
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(conv.weight.detach().double() * a.view(-1, 1, 1, 1))
        out.bias.copy_(bias)
    return out


def scale_linear_output(linear: nn.Linear, a: torch.Tensor, b: torch.Tensor | None = None) -> nn.Linear:
    """``a ⊙ linear(x) + b`` as one Linear (``a``, ``b``: ``(out_features,)``; ``b`` optional)."""
    a = a.double()
    weight = linear.weight.detach().double() * a[:, None]
    bias = a * _bias64(linear, linear.out_features) if linear.bias is not None or b is not None else None
    if b is not None:
        bias = bias + b.double()
    return _new_linear(weight, bias, linear)


def scale_linear_input(linear: nn.Linear, s: torch.Tensor) -> nn.Linear:
    """``linear(s ⊙ x)`` as one Linear: ``W' = W·diag(s)`` (``s``: ``(in_features,)``)."""
    bias = None if linear.bias is None else linear.bias.detach().double()
    return _new_linear(linear.weight.detach().double() * s.double(), bias, linear)


def fold_repbn_into_residual_stream(norm: Norm, writers: Iterable[nn.Linear], last_writer: nn.Linear,
                                    readers: Iterable[nn.Linear]) -> tuple[list[nn.Linear], nn.Linear, list[nn.Linear]]:
    """Remove a final norm by carrying ``a ⊙ h + b`` in the last stage's residual stream ``h``.

    ``writers``: every Linear whose output is added to (or starts) the stream, except
    ``last_writer`` (the last block's ``mlp.fc2``), which also adds ``b``; ``readers``: every Linear
    reading the stream through an already-folded norm (each block's ``qkv`` and ``fc1``), which
    get ``diag(1/a)`` on their input. Returns the new ``(writers, last_writer, readers)``. Needs
    ``a ≠ 0`` everywhere; folding a final ``norm → pool → head`` into the head with
    :func:`fold_repbn_into_linear` is the simpler exact alternative.
    """
    a, b = repbn_affine(norm)
    if bool((a == 0).any()):
        raise ValueError("a RepBN channel scale is 0: the stream fold would divide by zero")
    return ([scale_linear_output(w, a) for w in writers], scale_linear_output(last_writer, a, b),
            [scale_linear_input(r, 1.0 / a) for r in readers])
