"""Keep freed memory inside the process, so a CPU training step does not page-fault its activations again.

glibc's ``malloc`` returns large freed blocks to the kernel (blocks above the mmap
threshold, and the heap top beyond the trim threshold). A training step frees its
activations and the next step allocates the same sizes again, which the kernel then has
to supply as fresh zero-filled pages, one minor page fault per 4 KiB. PyTorch's CPU
performance guide avoids this by preloading jemalloc or tcmalloc; this does the same with
glibc's own ``mallopt``, in-process, so no launcher or extra package is needed.
``reproduce/benchmark_allocator.py`` measures what it changes (``results/cswin_unet/allocator_ab.md``).

It is off unless ``REPRO_KEEP_FREED_MEMORY=1``: on the 2-core development machine it removed
the page faults (about 25k per CSWin-UNet step, 0.056 s of system CPU time, down to 0.004 s)
but the step's wall time moved by less than the noise between processes (medians 1.05× in
fp32, 0.95× in bf16), and memory freed after the peak then stays with the process until it
exits. Anything other than glibc (macOS, musl) is left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["ENV_VAR", "keep_freed_memory", "MALLOPT_SETTINGS"]

ENV_VAR = "REPRO_KEEP_FREED_MEMORY"
#: glibc ``mallopt`` parameters (malloc.h) and the values set: blocks up to 1 GiB come from the
#: heap, the heap top is never trimmed, and the heap grows in 64 MiB steps.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOPT_SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 64 << 20}

_applied = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # not glibc
    return libc


def keep_freed_memory() -> bool:
    """Apply :data:`MALLOPT_SETTINGS` once per process when ``REPRO_KEEP_FREED_MEMORY=1``; True when in effect.

    False (and nothing changed) when the variable is unset or off, or without glibc.
    Forked DataLoader workers inherit the setting.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_VAR, "0").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = all(libc.mallopt(param, value) == 1 for param, value in MALLOPT_SETTINGS.items())
    return _applied
