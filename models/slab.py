"""SLAB (Guo, Chen, Tang, Wang, ICML 2024, arXiv 2405.11582): the whole classification networks.

Official code: github.com/xinghaochen/SLAB @ f58db00 (no licence: re-implemented from the
project's specification, ``shared/papers/slab.md``). The networks are timm's
``VisionTransformer`` / ``SwinTransformer`` configured by constructor arguments, and the
project's CSWin layers; the few parts timm cannot express are written in
:mod:`models.slab_deit`, :mod:`models.slab_swin`, :mod:`models.slab_cswin` (each says which).

Registered under the release's names (224², 1000 classes; parameter counts equal the
release's exactly, checked against the conformance manifests):

=============  =======================================  ===========  ==========
name           network                                  norm (T)     params
=============  =======================================  ===========  ==========
deit_t_prepbn  DeiT-T, softmax, class token             RepBN        5,717,441
deit_s_prepbn  DeiT-S, softmax, class token             PRepBN 300k  22,069,889
slab_deit_t    DeiT-T, SLA, avg pool, unused cls_token  PRepBN 60k   6,198,401
slab_deit_s    DeiT-S, SLA, avg pool, unused cls_token  PRepBN 60k   22,992,641
swin_t_prepbn  Swin-T, window 7                         RepBN        28,288,383
slab_swin_t    Swin-T, LLSS (SLA global / softmax 7)    PRepBN 60k   29,216,605
slab_swin_s    Swin-S, LLSS                             PRepBN 60k   50,552,965
slab_cswin_t   CSWin-T 64 [2,4,18,1], LLSS              PRepBN 120k  21,227,807
=============  =======================================  ===========  ==========

Faithful details: RepBN α = 1 and SLA positional term P = 0 at init; LN eps 1e-6 in the DeiT
family, 1e-5 in Swin/CSWin; the released drop-path rates (DeiT 0, Swin-T-PRepBN 0.1,
SLAB-Swin-T/S 0.2/0.3, SLAB-CSWin-T 0.1); Swin window 56 in SLA stages = global and unshifted;
eval mode uses the RepBN path only (``eval_mixture=True`` switches).

Switches and deviations:

* ``deit_t_prepbn`` / ``swin_t_prepbn`` build plain RepBN as released (inference-time definitions
  matching the checkpoints); ``progressive=True`` gives the training form (PRepBN, ``T`` default
  300,000, the release's ``LinearNorm`` default — a project choice for these two).
* ``norm=`` ``"ln" | "bn" | "repbn" | "prepbn"`` and ``attention=`` ``"sla" | "softmax"`` (or a Swin/
  CSWin stage pattern such as ``"LLSS"``) build the normalisation / attention ablations.
* PRepBN ``counting`` defaults to ``"global_step"`` (γ from the trainer's step through
  :class:`lightning_modules.slab_callbacks.ProgressiveNormSchedule`, spec §6 #1);
  ``counting="per_forward"`` is the release's per-forward ticking. ``schedule`` ``"linear"``
  (released) or the project-defined ``"cosine"`` / ``"step"``.
* :func:`reparameterize` / ``model.merge()``: the inference model with every RepBN folded, with
  the corrected patch-embedding bias (``release_formula=True`` reproduces the release's).
* SLAB-CSWin's SLA branch computes SLA + DWC + LePE (reconstructed; only its names and shapes
  are pinned by the fixtures). PVT is not built.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.layers.repbn import ProgressiveNorm, official_progressive_norm_key
from models.registry import register_model
from models.slab_cswin import SLABCSWin
from models.slab_deit import SLABVisionTransformer
from models.slab_reparam import reparameterize
from models.slab_swin import SLABSwinTransformer

__all__ = [
    "SLABVisionTransformer",
    "SLABSwinTransformer",
    "SLABCSWin",
    "reparameterize",
    "official_key",
    "convert_official_state_dict",
    "RELEASE_T",
]

#: The release's T (training forwards of the LN → RepBN decay) per constructor (spec §2.3).
RELEASE_T = {"slab_deit_t": 60_000, "slab_deit_s": 60_000, "deit_s_prepbn": 300_000, "slab_swin_t": 60_000,
             "slab_swin_s": 60_000, "slab_cswin_t": 120_000, "deit_t_prepbn": 300_000, "swin_t_prepbn": 300_000}

# Saved by the release but non-persistent (recomputed) in timm: dropped on conversion.
_DROPPED_OFFICIAL = ("relative_position_index", "attn_mask")


def _norm_kwargs(T: int, schedule: str, counting: str, ln_eps: float, warmup: int = 0,
                 eval_mixture: bool = False) -> dict[str, Any]:
    return dict(T=T, schedule=schedule, counting=counting, ln_eps=ln_eps, warmup=warmup, eval_mixture=eval_mixture)


def _resolve_norm(norm: str | None, progressive: bool | None, default: str) -> str:
    if progressive is None:
        return norm or default
    chosen = "prepbn" if progressive else "repbn"
    if norm is not None and norm != chosen:
        raise ValueError(f"progressive={progressive} contradicts norm={norm!r}")
    return chosen


def _deit(name: str, embed_dim: int, num_heads: int, *, attention: str, norm: str, T: int | None,
          schedule: str, counting: str, pool: str | None = None, released_cls_token: bool | None = None,
          warmup: int = 0, eval_mixture: bool = False, **kwargs) -> SLABVisionTransformer:
    pool = pool or ("avg" if attention == "sla" else "token")
    if released_cls_token is None:
        released_cls_token = pool == "avg"
    kwargs.setdefault("depth", 12)
    return SLABVisionTransformer(
        embed_dim=embed_dim, num_heads=num_heads, attention=attention, norm=norm, pool=pool,
        released_cls_token=released_cls_token,
        norm_kwargs=_norm_kwargs(T or RELEASE_T[name], schedule, counting, 1e-6, warmup, eval_mixture), **kwargs)


def _swin(name: str, depths: tuple[int, ...], *, attention: str, norm: str, T: int | None, schedule: str,
          counting: str, warmup: int = 0, eval_mixture: bool = False, **kwargs) -> SLABSwinTransformer:
    return SLABSwinTransformer(
        depths=depths, attention=attention, norm=norm,
        norm_kwargs=_norm_kwargs(T or RELEASE_T[name], schedule, counting, 1e-5, warmup, eval_mixture), **kwargs)


_CLS = dict(input_size=(3, 224, 224), paper="slab", task="classification")


@register_model(**_CLS)
def deit_t_prepbn(*, progressive: bool | None = None, norm: str | None = None, attention: str = "softmax",
                  T: int | None = None, schedule: str = "linear", counting: str = "global_step",
                  num_classes: int = 1000, drop_path_rate: float = 0.0, **kwargs) -> SLABVisionTransformer:
    """DeiT-T-PRepBN: plain RepBN as released; ``progressive=True``: PRepBN (T 300k)."""
    return _deit("deit_t_prepbn", 192, 3, attention=attention, norm=_resolve_norm(norm, progressive, "repbn"),
                 T=T, schedule=schedule, counting=counting, num_classes=num_classes,
                 drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def deit_s_prepbn(*, norm: str = "prepbn", attention: str = "softmax", T: int | None = None,
                  schedule: str = "linear", counting: str = "global_step", num_classes: int = 1000,
                  drop_path_rate: float = 0.0, **kwargs) -> SLABVisionTransformer:
    """DeiT-S-PRepBN: PRepBN, T = 300,000, softmax attention, class token."""
    return _deit("deit_s_prepbn", 384, 6, attention=attention, norm=norm, T=T, schedule=schedule,
                 counting=counting, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def slab_deit_t(*, norm: str = "prepbn", attention: str = "sla", T: int | None = None, schedule: str = "linear",
                counting: str = "global_step", num_classes: int = 1000, drop_path_rate: float = 0.0,
                **kwargs) -> SLABVisionTransformer:
    """SLAB-DeiT-T: PRepBN (T 60k), SLA over 14×14 patches, average pooling."""
    return _deit("slab_deit_t", 192, 3, attention=attention, norm=norm, T=T, schedule=schedule,
                 counting=counting, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def slab_deit_s(*, norm: str = "prepbn", attention: str = "sla", T: int | None = None, schedule: str = "linear",
                counting: str = "global_step", num_classes: int = 1000, drop_path_rate: float = 0.0,
                **kwargs) -> SLABVisionTransformer:
    """SLAB-DeiT-S: PRepBN (T 60k), SLA over 14×14 patches, average pooling."""
    return _deit("slab_deit_s", 384, 6, attention=attention, norm=norm, T=T, schedule=schedule,
                 counting=counting, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def swin_t_prepbn(*, progressive: bool | None = None, norm: str | None = None, attention: str = "softmax",
                  T: int | None = None, schedule: str = "linear", counting: str = "global_step",
                  num_classes: int = 1000, drop_path_rate: float = 0.1, **kwargs) -> SLABSwinTransformer:
    """Swin-T-PRepBN (the release's ``SwinTransformer``): plain RepBN; ``progressive=True``: PRepBN (T 300k)."""
    return _swin("swin_t_prepbn", (2, 2, 6, 2), attention=attention, norm=_resolve_norm(norm, progressive, "repbn"),
                 T=T, schedule=schedule, counting=counting, num_classes=num_classes,
                 drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def slab_swin_t(*, norm: str = "prepbn", attention: str = "sla", T: int | None = None, schedule: str = "linear",
                counting: str = "global_step", num_classes: int = 1000, drop_path_rate: float = 0.2,
                **kwargs) -> SLABSwinTransformer:
    """SLAB-Swin-T: PRepBN (T 60k), SLA (global) in stages 1–2, softmax window 7 in stages 3–4."""
    return _swin("slab_swin_t", (2, 2, 6, 2), attention=attention, norm=norm, T=T, schedule=schedule,
                 counting=counting, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def slab_swin_s(*, norm: str = "prepbn", attention: str = "sla", T: int | None = None, schedule: str = "linear",
                counting: str = "global_step", num_classes: int = 1000, drop_path_rate: float = 0.3,
                **kwargs) -> SLABSwinTransformer:
    """SLAB-Swin-S: as SLAB-Swin-T with depths [2, 2, 18, 2], drop path 0.3."""
    return _swin("slab_swin_s", (2, 2, 18, 2), attention=attention, norm=norm, T=T, schedule=schedule,
                 counting=counting, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


@register_model(**_CLS)
def slab_cswin_t(*, norm: str = "prepbn", attention: str = "sla", T: int | None = None, schedule: str = "linear",
                 counting: str = "global_step", num_classes: int = 1000, drop_path_rate: float = 0.1,
                 warmup: int = 0, eval_mixture: bool = False, **kwargs) -> SLABCSWin:
    """SLAB-CSWin-T: CSWin 64 [2,4,18,1], split [1,2,7,7], heads [2,4,8,16], LLSS, PRepBN (T 120k)."""
    return SLABCSWin(norm=norm, attention=attention, num_classes=num_classes, drop_path_rate=drop_path_rate,
                     norm_kwargs=_norm_kwargs(T or RELEASE_T["slab_cswin_t"], schedule, counting, 1e-5, warmup,
                                              eval_mixture), **kwargs)


@register_model(input_size=(3, 32, 32), paper="slab", task="classification")
def slab_deit_test(**kwargs) -> SLABVisionTransformer:
    """Tiny SLAB-DeiT (32², patch 8, 2 blocks of 16 channels, T = 10) without the unused class token."""
    defaults = dict(img_size=32, patch_size=8, depth=2, num_classes=10, T=10, released_cls_token=False)
    return _deit("slab_deit_t", 16, 2, **{"attention": "sla", "norm": "prepbn", "schedule": "linear",
                                         "counting": "global_step", **defaults, **kwargs})


@register_model(input_size=(3, 64, 64), paper="slab", task="classification")
def slab_swin_test(**kwargs) -> SLABSwinTransformer:
    """Tiny SLAB-Swin (64², 8 channels, depths 1-1-2-1, softmax window 2 with a shift in stage 3, T = 10)."""
    defaults = dict(img_size=64, embed_dim=8, num_heads=(1, 2, 2, 4), window_size=2, num_classes=10, T=10,
                    drop_path_rate=0.1)
    options = {"attention": "sla", "norm": "prepbn", "schedule": "linear", "counting": "global_step",
               **defaults, **kwargs}
    return _swin("slab_swin_t", options.pop("depths", (1, 1, 2, 1)), **options)


# --------------------------------------------------------------------------------------------- conversion
def official_key(model: nn.Module, key: str) -> str:
    """Our state-dict key of ``model`` → the release's (progressive norms: ``norm1``/``norm2``/``warm``/``iter``)."""
    module_path, _, _ = key.rpartition(".")
    parts = module_path.split(".") if module_path else []
    for depth in range(len(parts), 0, -1):  # the innermost progressive norm holding the key
        prefix = ".".join(parts[:depth])
        if isinstance(model.get_submodule(prefix), ProgressiveNorm):
            key = f"{prefix}.{official_progressive_norm_key(key[len(prefix) + 1:])}"
            break
    return model.official_key(key)


def convert_official_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A released checkpoint (``{"model": ...}`` or a state dict, ``module.`` prefixes allowed) → ``model``'s keys.

    Buffers the release saves and timm recomputes (``relative_position_index``, ``attn_mask``)
    are dropped; any other unknown key raises ``KeyError``.
    """
    if isinstance(state.get("model"), dict):
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    inverse = {official_key(model, k): k for k in model.state_dict()}
    out, unknown = {}, []
    for key, value in state.items():
        if key in inverse:
            out[inverse[key]] = value
        elif not key.endswith(_DROPPED_OFFICIAL):
            unknown.append(key)
    if unknown:
        raise KeyError(f"official keys without a counterpart in {type(model).__name__}: {sorted(unknown)[:5]}")
    return out
