"""A cache of trained stage weights keyed by everything that defines them, for chained quick runs.

``StageCache().path(name, config)`` is ``<cache dir>/glare_stages/<name>-<sha256(config)[:16]>.pt``
with the cache dir ``$REPRO_CACHE_DIR`` or ``~/.cache/repro-seg`` (the synthetic data's); ``config``
is any JSON-able description (architecture, initial weights' hash, recipe, data, seed). Files are
written to a temporary sibling and renamed into place (atomic: a crash or a concurrent writer never
leaves a partial file), beside a ``.json`` with the config they were trained with.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from datamodules.synthetic import default_cache_dir

__all__ = ["StageCache", "config_key", "state_hash"]


def config_key(config: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of ``config`` as sorted JSON (non-JSON values by ``repr``)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def state_hash(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a module's parameters and buffers, names and bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class StageCache:
    """Stage weights on disk (module docstring); ``root``: the cache dir (default: the synthetic data's)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        base = Path(root).expanduser() if root is not None else default_cache_dir()
        self.root = base / "glare_stages"

    def path(self, name: str, config: dict[str, Any]) -> Path:
        return self.root / f"{name}-{config_key(config)}.pt"

    def load(self, name: str, config: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The cached state dict, or ``None`` when absent."""
        path = self.path(name, config)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, name: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
        """Write ``state`` (and its config beside it) atomically; returns the file."""
        path = self.path(name, config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        meta = path.with_suffix(".json")
        tmp_meta = meta.parent / (tag + ".json")
        tmp_meta.write_text(json.dumps(config, indent=2, sort_keys=True, default=repr) + "\n")
        os.replace(tmp_meta, meta)
        tmp = path.parent / tag
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
        return path
