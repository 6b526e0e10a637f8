"""Checkpoints that a crash cannot corrupt: written to a temporary file, synced, then renamed onto the target.

Lightning's ``TorchCheckpointIO`` serialises the checkpoint in memory and then writes
it straight onto the target path, so a process killed during that write (SIGKILL, OOM
killer, a lost node, a full disk) leaves a truncated ``last.ckpt`` behind, and the next
``fit --ckpt_path last.ckpt`` fails on it (or resumes from an older file if the user
deletes it by hand). :class:`AtomicCheckpointIO` writes ``<dir>/.<name>.<pid>-<token>.tmp``
in the target's folder, ``fsync``\\ s it, ``os.replace``\\ s it onto the target (atomic on
POSIX and Windows within one file system) and syncs the folder, so the target is at
every moment either the previous complete checkpoint or the new complete one.

Every recipe gets it from ``reproduce/configs/_base_/default.yaml``::

    trainer:
      plugins:
        - class_path: lightning_modules.checkpointing.AtomicCheckpointIO

``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` through
``trainer.save_checkpoint`` and so through this plugin; ``save_last="link"`` replaces
a symbolic link instead (Lightning removes the old link first), which is not covered:
a crash between the two steps leaves no ``last.ckpt``, never a corrupt one.

The temporary names never match what Lightning or a user looks for: they are hidden,
end in ``.tmp`` (not ``.ckpt``) and do not start with ``last``. A write that fails
removes its temporary file; one killed outright leaves it, and the next successful
write of the same target removes the ones whose process is gone.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "temporary_files"]

_TMP_SUFFIX = ".tmp"


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")


def temporary_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files of writes of ``path`` that did not finish (killed processes, or one in progress)."""
    path = Path(path)
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(_TMP_SUFFIX))


def _writer_pid(tmp: Path, path: Path) -> int | None:
    middle = tmp.name[len(f".{path.name}."):-len(_TMP_SUFFIX)]
    pid, _, _token = middle.partition("-")
    return int(pid) if pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM), or a platform without signal 0
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Removes the temporary files of ``path`` left by processes that no longer run (killed mid-write)."""
    for tmp in temporary_files(path):
        pid = _writer_pid(tmp, path)
        if pid is None or (pid != os.getpid() and not _process_alive(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _fsync_directory(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    Writes ``obj`` to a temporary file in the same folder, flushes and ``fsync``\\ s it,
    renames it onto ``path`` with ``os.replace`` and syncs the folder. On any error
    (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)
    _remove_stale_temporaries(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (:func:`atomic_torch_save`).

    Loading and removing are Lightning's. Remote paths (``s3://`` and other fsspec
    URLs, where a rename is not atomic or not available) are written by Lightning's
    own code, as before.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        atomic_torch_save(checkpoint, os.fspath(path))
