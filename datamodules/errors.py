"""The one exception every datamodule raises for bad data.

A :class:`DatasetError` message always names the offending file or folder by its
full path, says what was expected and what was found, e.g.::

    /data/synapse/train_npz/case0005_slice012.npz: label values must be integers
    in [0, 8] (9 classes); found values [9, 12]

It subclasses :class:`ValueError` so generic ``except ValueError`` handlers (and
LightningCLI's error reporting) still catch it. Command-line entry points wrap
their work in :func:`exit_on_dataset_error`, so users see that one message, not a
traceback (``REPRO_TRACEBACK=1`` keeps the traceback).

The whole-set check (:mod:`datamodules.checks`) raises a subclass,
:class:`~datamodules.checks.DataCheckError`, whose message has several lines: a
summary (``3 broken files in /data/Synapse (full check of 2223 files):``), then one
line per broken file; :func:`exit_on_dataset_error` prints all of them.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DatasetError", "describe_path", "exit_on_dataset_error"]


class DatasetError(ValueError):
    """Bad, missing or inconsistent data. The message names the file (full path)."""


def describe_path(path: str | os.PathLike[str]) -> str:
    """Absolute form of ``path`` for error messages (not resolved through links)."""
    return str(Path(path).expanduser().absolute())


@contextmanager
def exit_on_dataset_error() -> Iterator[None]:
    """Turn a :class:`DatasetError` into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except DatasetError as error:
        if os.environ.get("REPRO_TRACEBACK"):
            raise
        print(f"error: {_original_message(error)}\n(set REPRO_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
        raise SystemExit(2) from None


def _original_message(error: DatasetError) -> str:
    """The message as raised, also when a DataLoader worker re-raised it with its traceback inside."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    for name in dict.fromkeys((type(error).__name__, DatasetError.__name__)):
        marker = f"{name}: "
        if marker in message:
            return message.rsplit(marker, 1)[1].strip()
    return message


def resolve_data_root(data_dir, env_var: str, title: str, expect: str) -> Path:
    """The data root from ``data_dir``, else ``$env_var``; a ``DatasetError`` saying which was
    missing or what the path is when it is not a folder. ``expect`` describes the layout."""
    if data_dir is not None:
        root, source = Path(data_dir).expanduser(), "the data_dir argument"
    else:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise DatasetError(f"No {title} data root: data_dir was not given and the environment variable "
                               f"{env_var} is not set; expected {expect}")
        root, source = Path(value).expanduser(), f"the environment variable {env_var}"
    if not root.is_dir():
        found = "is a file" if root.exists() else "does not exist"
        raise DatasetError(f"{describe_path(root)}: {title} data root (from {source}) {found}; expected {expect}")
    return root
