"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every paper file registers its entry points (``<paper>_<size>[_<variant>]``) and a
tiny ``<paper>_test`` variant. Each entry records the input size the paper
evaluates it at, so generic code (benchmarks, shape tests) can build an input::

    @register_model(input_size=(3, 224, 224), paper="cswin_unet", task="segmentation")
    def cswin_unet(**kwargs) -> nn.Module: ...

    net = create_model("cswin_unet", num_classes=9)
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


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
