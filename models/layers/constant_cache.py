"""Constant tensors (distance maps, index tables) built once per key and kept on the module.

A tensor first built under ``torch.inference_mode()`` (a test or validation pass before training)
would be an inference tensor, which autograd refuses to save for backward in a later training
step. :class:`ConstantCache` builds such tensors with inference mode off, so one cached entry
serves evaluation and training alike.

    cache = ConstantCache()
    dis = cache.get((h, w, device, dtype), lambda: grid_distance(h, w, device, dtype))
"""
from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

__all__ = ["ConstantCache"]


class ConstantCache:
    """``{key: tensor}``, each built once by the ``build`` given to :meth:`get`, never as an inference tensor."""

    def __init__(self) -> None:
        self._store: dict[Hashable, torch.Tensor] = {}

    def get(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        value = self._store.get(key)
        if value is None:
            if torch.is_inference_mode_enabled():  # only then: training and torch.compile tracing stay as they were
                with torch.inference_mode(False):
                    value = build()
            else:
                value = build()
            self._store[key] = value
        return value
