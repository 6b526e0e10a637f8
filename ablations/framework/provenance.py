"""Where a number came from: the commit, whether the tree was dirty, the libraries and the machine.

One module serves every writer of ``results/`` (the ablation tables and the
benchmark), so all of them record the same facts under the same names::

    provenance()        -> {"commit": "abc1234", "dirty": False, "created": "2026-12-01T10:00:00Z",
                            "environment": {"python": ..., "torch": ..., ...}}
    machine()           -> {"platform": ..., "cpu": ..., "cpu_features": ["avx512_bf16"], "cpu_capability": "AVX512",
                            "cpu_usable": 2, "torch_threads": 2, "cuda_devices": [...], ...}
    hardware()          -> the part of machine() that can change numbers (cpu, cpu_features,
                            cpu_capability, cuda_devices), recorded in every table's results
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["REPO_ROOT", "TRACKED_PACKAGES", "git_commit", "git_dirty", "library_versions", "machine",
           "provenance", "utc_now"]

REPO_ROOT = Path(__file__).resolve().parents[2]

# Packages whose version can change a run's numbers with the same commit and seed
# (augmentation and resizing: albumentations / OpenCV / SciPy; everything else: torch).
TRACKED_PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "numpy", "scipy",
                    "albumentations", "opencv-python-headless", "medpy")


def _git(*args: str, repo_dir: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=str(repo_dir or REPO_ROOT), capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_dirty(repo_dir: str | Path | None = None) -> bool | None:
    """Whether tracked code (``results/`` aside) has uncommitted changes; ``None`` outside a repository."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", repo_dir=repo_dir)
    return None if status is None else bool(status)


def git_commit(repo_dir: str | Path | None = None) -> str:
    """Short hash of ``HEAD``, ``-dirty`` if tracked code changed; ``"unknown"`` outside a repository."""
    commit = _git("rev-parse", "--short", "HEAD", repo_dir=repo_dir)
    if not commit:
        return "unknown"
    return commit + ("-dirty" if git_dirty(repo_dir) else "")


def utc_now() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def library_versions() -> dict[str, str]:
    """``{"python": ..., package: version}`` of the packages that can change results; missing ones omitted."""
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of ``/proc/cpuinfo`` (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


#: CPU flags that decide which matrix kernels run, so how fast bf16 runs against fp32 and how fp32
#: rounds (timings and results record which are present): AMX tiles, AVX-512 BF16, AVX-512, AVX2.
SPEED_RELEVANT_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def _cpu_features() -> list[str]:
    flags = set((_cpuinfo_field("flags") or "").split())
    return [flag for flag in SPEED_RELEVANT_CPU_FLAGS if flag in flags]


def describe_cpu(info: dict[str, Any]) -> str:
    """For a report: ``"AMD EPYC with avx512_bf16, avx512f, avx2"`` from :func:`machine`'s dict."""
    features = ", ".join(info.get("cpu_features") or ()) or "none of " + ", ".join(SPEED_RELEVANT_CPU_FLAGS)
    return f"{info.get('cpu', 'unknown CPU')} with {features}"


def machine() -> dict[str, Any]:
    """The hardware a timing was taken on (imports torch)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_features": _cpu_features(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


def hardware() -> dict[str, Any]:
    """The part of :func:`machine` that can change a run's numbers, not only its speed: the CPU and
    its instruction sets select different fp32 kernels, which round differently (a quick table
    trained on two CPUs differs run by run), and the CUDA devices."""
    info = machine()
    return {key: info[key] for key in ("cpu", "cpu_features", "cpu_capability", "cuda_devices")}


def describe_hardware(info: dict[str, Any]) -> str:
    """``"AMD EPYC with avx512_bf16, avx512f, avx2; CUDA: none"`` for a results file's Markdown."""
    cuda = ", ".join(info.get("cuda_devices") or ()) or "none"
    return f"{describe_cpu(info)}; CUDA: {cuda}"


def provenance(repo_dir: str | Path | None = None) -> dict[str, Any]:
    """``commit`` (short, ``-dirty`` suffix), ``dirty``, ``created`` (UTC) and ``environment`` (library versions)."""
    return {"commit": git_commit(repo_dir), "dirty": git_dirty(repo_dir), "created": utc_now(),
            "environment": library_versions()}
