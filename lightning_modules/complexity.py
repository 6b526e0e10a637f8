"""Model complexity: parameter counts and two multiply-accumulate (MAC) conventions.

Papers in this field publish "FLOPs" that are almost always **MACs** counted by a
module-hook tool (thop, ptflops): only layers that the tool knows are counted,
and a multiply-add counts once. A FLOP counter that sees every matrix product
gives a larger number. Both are computed here, and every table must say which
one it shows:

``macs_conv_linear`` (thop-style, "what the paper tables call FLOPs")
    Forward hooks on ``nn.Conv{1,2,3}d``, ``nn.ConvTranspose{1,2,3}d``,
    ``nn.Linear`` (and the four projections of ``nn.MultiheadAttention``), with
    the analytic formula per call, bias additions **not** counted:

    * convolution: ``out.numel() · C_in/groups · prod(kernel)``
      = ``out.numel() · weight[0].numel()`` (weight: ``(C_out, C_in/g, *k)``);
    * transposed convolution: each *input* element is multiplied by
      ``C_out/groups · prod(kernel)`` weights, so ``in.numel() · weight[0].numel()``
      (weight: ``(C_in, C_out/g, *k)``). This is the true count, and equals what
      ``FlopCounterMode`` reports; thop's output-based formula over-counts a strided
      transposed convolution by ``prod(stride)``;
    * linear: ``out.numel() · in_features`` (any leading dims, e.g. tokens ``(B, N, C)``);
    * ``nn.MultiheadAttention``: the q/k/v in-projections and the out-projection,
      as four linear layers (its attention products are not counted, as for any
      other attention);
    * deformable convolution (:class:`~models.layers.deformable.ModulatedDeformConv2d`,
      ``torchvision.ops.DeformConv2d``): the convolution formula on its ``weight``; its
      offset predictor is a ``nn.Conv2d`` and counts as one. The bilinear sampling and
      the mask product are element-wise and not counted.

    Not counted: attention matrix products, functional calls (``F.linear``,
    ``F.conv2d``, ``torch.matmul``), normalisation, activations, pooling,
    interpolation, element-wise ops. A module that is called twice counts twice.

``macs_all``
    ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass, total FLOPs
    divided by 2 (the counter charges 2 FLOPs per multiply-add). It counts every
    convolution and matrix product that reaches ATen (``mm``, ``addmm``, ``bmm``,
    ``baddbmm``, ``convolution``, fused attention), whatever module or function
    issued it; element-wise work is still not counted.

    PyTorch's counter has no formula for the CPU fused-attention kernel
    ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward), which
    is what ``F.scaled_dot_product_attention`` dispatches to on the CPU, so on a
    CPU it silently counts attention as zero. :data:`EXTRA_FLOP_FORMULAS` adds the
    standard attention formula for those ops (the one the counter already applies
    to the CUDA flash / efficient / cuDNN kernels), so CPU and GPU counts agree. It has
    none for torchvision's ``deform_conv2d`` either (a custom op, counted as zero):
    :func:`deform_conv2d_flops` gives it the convolution formula.

Parameters are counted once per tensor (shared / tied parameters once), split
into total and trainable (``requires_grad``).

All counting functions run one forward pass of the model on the given inputs in
eval mode under ``torch.no_grad()`` and restore the model's training flag. They count
the architecture, not a faster execution of it: modules with an exact fast path that
executes fewer MACs (a boolean ``fast_path`` attribute, e.g. CARAFE projecting before its
reassembly) run their reference form while counting (:func:`reference_forms`).
Counts are for the batch that is passed; pass a batch of 1 for per-image figures.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.layers.deformable import ModulatedDeformConv2d

__all__ = [
    "ParamCount",
    "count_parameters",
    "macs_conv_linear",
    "macs_conv_linear_by_module",
    "macs_all",
    "macs_all_by_op",
    "sdpa_flops",
    "sdpa_backward_flops",
    "EXTRA_FLOP_FORMULAS",
    "MAC_CONVENTIONS",
]

#: One-line definitions, for tables and JSON records.
MAC_CONVENTIONS: dict[str, str] = {
    "macs_conv_linear": (
        "multiply-accumulates of Conv{1,2,3}d / ConvTranspose{1,2,3}d / Linear modules only "
        "(forward hooks, analytic formula, bias not counted); the thop-style number that papers "
        "label 'FLOPs'"
    ),
    "macs_all": (
        "torch.utils.flop_counter.FlopCounterMode total / 2: every convolution and matrix product "
        "incl. attention (CPU fused SDPA added) and matmul-based reassembly; element-wise ops excluded"
    ),
}


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
class ParamCount(NamedTuple):
    total: int
    trainable: int


def count_parameters(model: nn.Module) -> ParamCount:
    """Number of parameter elements (each shared tensor once): total and ``requires_grad`` ones."""
    params = list(model.parameters())  # nn.Module.parameters() already de-duplicates shared tensors
    return ParamCount(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
@contextmanager
def reference_forms(model: nn.Module) -> Iterator[None]:
    """Within the block every submodule with a boolean ``fast_path`` runs its reference form (``False``)."""
    switched = [m for m in model.modules() if isinstance(getattr(m, "fast_path", None), bool) and m.fast_path]
    for module in switched:
        module.fast_path = False
    try:
        yield
    finally:
        for module in switched:
            module.fast_path = True


@contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), reference_forms(model):
            yield
    finally:
        model.train(was_training)


def _first_tensor(obj: Any) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"expected a tensor output, got {type(obj).__name__}")


# --------------------------------------------------------------------------------------------
# Convention (a): Conv + Linear module hooks
# --------------------------------------------------------------------------------------------
def _conv_macs(module: nn.Module, inputs: tuple, output: Any) -> int:
    """A (deformable) convolution's ``weight`` applied once per output (per input when transposed) element."""
    per_element = module.weight[0].numel()  # C_in/g·prod(k) (conv) or C_out/g·prod(k) (transposed)
    if getattr(module, "transposed", False):
        return _first_tensor(inputs).numel() * per_element
    return _first_tensor(output).numel() * per_element


#: Modules applying their ``weight`` as a (deformable) convolution outside ``nn.Conv2d``.
DEFORMABLE_CONVS = (ModulatedDeformConv2d, torchvision.ops.DeformConv2d)


def _linear_macs(module: nn.Linear, inputs: tuple, output: Any) -> int:
    return _first_tensor(output).numel() * module.in_features


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: Any) -> int:
    names = ("query", "key", "value")
    query, key, value = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names))
    e = module.embed_dim
    q_tokens = query.numel() // e
    k_tokens = key.numel() // module.kdim
    v_tokens = value.numel() // module.vdim
    # in-projections q, k, v (to embed_dim each) and the output projection embed_dim → embed_dim
    return q_tokens * e * e + k_tokens * module.kdim * e + v_tokens * module.vdim * e + q_tokens * e * e


def macs_conv_linear_by_module(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, int]:
    """Conv + Linear MACs of one forward pass, per module name (qualified, ``""`` = the root).

    See the module docstring for the formulas. Modules that never run are left out;
    a module called several times accumulates.
    """
    counts: dict[str, int] = defaultdict(int)
    handles = []

    def make_hook(name: str, fn):
        def hook(module, inputs, output):
            counts[name] += int(fn(module, inputs, output))

        return hook

    def make_mha_hook(name: str):
        def hook(module, hook_args, hook_kwargs, output):
            counts[name] += int(_mha_macs(module, hook_args, hook_kwargs, output))

        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                handles.append(module.register_forward_hook(make_mha_hook(name), with_kwargs=True))
            elif isinstance(module, (nn.modules.conv._ConvNd, *DEFORMABLE_CONVS)):
                handles.append(module.register_forward_hook(make_hook(name, _conv_macs)))
            elif isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(make_hook(name, _linear_macs)))
        with _eval_no_grad(model):
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return dict(counts)


def macs_conv_linear(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Total thop-style MACs (Conv + Linear modules only) of ``model(*args, **kwargs)``."""
    return sum(macs_conv_linear_by_module(model, *args, **kwargs).values())


# --------------------------------------------------------------------------------------------
# Convention (b): every matrix product, through FlopCounterMode
# --------------------------------------------------------------------------------------------
def sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of softmax(Q Kᵀ) V for q ``(B, Hq, L, E)``, k ``(B, Hkv, S, E)``, v ``(B, Hkv, S, Ev)``.

    ``2·B·Hq·L·S·E`` for the scores plus ``2·B·Hq·L·S·Ev`` for the weighted sum
    (grouped-query attention broadcasts the key/value heads to the query heads).
    Softmax, scaling and masking are element-wise and not counted.
    """
    b, hq, l_q, e = query_shape
    s_k = key_shape[-2]
    e_v = value_shape[-1]
    return 2 * b * hq * l_q * s_k * (e + e_v)


def sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args: Any, out_shape=None,
                        **kwargs: Any) -> int:
    """FLOPs of the attention backward pass (scores recomputed).

    Recompute ``P = QKᵀ`` (L·S·E), ``dV = Pᵀ dO`` (L·S·Ev), ``dP = dO Vᵀ`` (L·S·Ev),
    ``dQ = dS K`` (L·S·E), ``dK = dSᵀ Q`` (L·S·E): ``2·B·Hq·L·S·(3E + 2Ev)``.
    """
    b, hq, l_q, e = query_shape
    s_k = key_shape[-2]
    e_v = value_shape[-1]
    return 2 * b * hq * l_q * s_k * (3 * e + 2 * e_v)


def deform_conv2d_flops(input_shape, weight_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of torchvision's ``deform_conv2d`` (input, weight, offset, mask, bias, ...): ``2 · out.numel() ·
    C_in/g · kh · kw``, the convolution's; bilinear sampling and the mask product are element-wise."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _extra_flop_formulas() -> dict[Any, Any]:
    aten = torch.ops.aten
    extra: dict[Any, Any] = {torch.ops.torchvision.deform_conv2d: deform_conv2d_flops}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = sdpa_backward_flops
    return extra


#: ``custom_mapping`` for ``FlopCounterMode``: ops that PyTorch's registry does not count.
EXTRA_FLOP_FORMULAS: dict[Any, Any] = _extra_flop_formulas()


def macs_all_by_op(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, int]:
    """MACs (= FlopCounterMode FLOPs / 2) of one forward pass, per ATen op (e.g. ``"aten.bmm"``)."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with _eval_no_grad(model), counter:
        model(*args, **kwargs)
    per_op = counter.get_flop_counts().get("Global", {})
    out = {}
    for op, flops in per_op.items():
        if flops % 2:
            raise AssertionError(f"{op}: odd FLOP count {flops}, not a multiply-add count")
        out[str(op)] = int(flops) // 2
    return dict(sorted(out.items()))


def macs_all(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Total MACs of every convolution and matrix product of ``model(*args, **kwargs)``."""
    return sum(macs_all_by_op(model, *args, **kwargs).values())

