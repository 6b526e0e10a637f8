"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every paper file registers its entry points (``<paper>_<size>[_<variant>]``) and a
tiny ``<paper>_test`` variant. Each entry records the input size the paper
evaluates it at, so generic code (benchmarks, shape tests) can build an input::

    @register_model(input_size=(3, 224, 224), paper="cswin_unet", task="segmentation")
    def cswin_unet(**kwargs) -> nn.Module: ...

    net = create_model("cswin_unet", num_classes=9)

Generic code that holds a network built from a config rather than by name (the
ablation runner's complexity columns) asks :func:`input_size_for`, which finds the
entry by the builder's return annotation (``-> CSWinUNet``).
"""
from __future__ import annotations

import fnmatch
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info", "input_size_for"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one entry point.

    ``input_size`` excludes the batch dimension: ``(C, H, W)`` for 2D models,
    ``(C, D, H, W)`` for 3D models.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, ...]
    paper: str
    task: str = "segmentation"
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def spatial_dims(self) -> int:
        return len(self.input_size) - 1

    @property
    def is_test_model(self) -> bool:
        return self.name.endswith("_test")

    @property
    def module_class(self) -> type | None:
        """The class the builder is annotated to return (``None`` without an annotation)."""
        try:
            returned = typing.get_type_hints(self.builder).get("return")
        except Exception:  # unresolvable annotation: no class to match
            return None
        return returned if isinstance(returned, type) else None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: tuple[int, ...],
    paper: str,
    task: str = "segmentation",
    tags: tuple[str, ...] = (),
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under its function name (or ``name``)."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = ModelInfo(key, builder, tuple(input_size), paper, task, tuple(tags))
        return builder

    return decorator


def _ensure_populated() -> None:
    # Importing the package imports every paper file, which registers its models.
    import models  # noqa: F401


def model_info(name: str) -> ModelInfo:
    _ensure_populated()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown model {name!r}; registered models: {known}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ``kwargs`` go to its constructor."""
    return model_info(name).builder(**kwargs)


def list_models(pattern: str = "*", *, include_test: bool = True, paper: str | None = None) -> list[str]:
    """Sorted names matching a glob ``pattern`` (optionally one paper's, without ``*_test``)."""
    _ensure_populated()
    names = []
    for key, info in _REGISTRY.items():
        if not fnmatch.fnmatch(key, pattern):
            continue
        if not include_test and info.is_test_model:
            continue
        if paper is not None and info.paper != paper:
            continue
        names.append(key)
    return sorted(names)


def input_size_for(net: nn.Module) -> tuple[int, ...] | None:
    """The input size (no batch dimension) at which to measure ``net``; ``None`` if unregistered.

    Channels and rank come from the registry entry whose builder returns
    ``type(net)`` (a paper entry before its ``*_test`` one), the channels from the net's
    own ``in_channels`` / ``in_chans`` when it has one (a 3-channel ISIC configuration of a
    gray entry); the spatial size is the net's own ``img_size`` when it has one (an int
    for every axis, or a tuple), so a network configured for 128² is measured at 128².
    """
    _ensure_populated()
    matches = [info for info in _REGISTRY.values() if info.module_class is type(net)]
    if not matches:
        return None
    info = sorted(matches, key=lambda i: (i.is_test_model, i.name))[0]
    channels = getattr(net, "in_channels", None) or getattr(net, "in_chans", None) or info.input_size[0]
    size = getattr(net, "img_size", None)
    if size is None:
        return (int(channels), *info.input_size[1:])
    spatial = (int(size),) * info.spatial_dims if isinstance(size, int) else tuple(int(v) for v in size)
    if len(spatial) != info.spatial_dims:
        raise ValueError(f"{type(net).__name__}.img_size={size!r} does not have {info.spatial_dims} spatial dims")
    return (int(channels), *spatial)
