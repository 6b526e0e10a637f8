"""The one exception every datamodule raises for bad data.

A :class:`DatasetError` message always names the offending file or folder by its
full path, says what was expected and what was found, e.g.::

    /data/synapse/train_npz/case0005_slice012.npz: label values must be integers
    in [0, 8] (9 classes); found values [9, 12]

It subclasses :class:`ValueError` so generic ``except ValueError`` handlers (and
LightningCLI's error reporting) still catch it.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DatasetError", "describe_path"]


class DatasetError(ValueError):
    """Bad, missing or inconsistent data. The message names the file (full path)."""


def describe_path(path: str | os.PathLike[str]) -> str:
    """Absolute form of ``path`` for error messages (not resolved through links)."""
    return str(Path(path).expanduser().absolute())
