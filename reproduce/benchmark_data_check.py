"""Time the whole-set data check (datamodules/checks.py) on a synthetic set the size of the Synapse release.

    python reproduce/benchmark_data_check.py                 # 2,211 slices 512² + 12 volumes 148×512² (~5 GB)
    python reproduce/benchmark_data_check.py --slices 200 --volumes 2 --depth 40   # a quick look

Writes random arrays in the release's on-disk format (``train_npz/*.npz``: float32 image,
uint8 label; ``test_vol_h5/*.npy.h5``: the same as volumes; the list files) into a
temporary folder (``--tmp-dir``, default the system's), then times
``SynapseDataModule.check_data()`` on it:

* ``full``, no check cache, with 1 and with 2 reading threads, the files in the OS page
  cache (just written or read);
* ``full``, no check cache, the files evicted from the OS page cache first
  (``posix_fadvise(DONTNEED)``, best effort): closest to a first run on files not read
  recently;
* ``fast`` (headers only), no check cache;
* the cached rerun: every file unchanged since the previous check.

The folder is deleted afterwards. Results: ``results/data_check_benchmark.json`` (written
by this script) and ``.md`` (rendered from it). The arrays are random, so this measures
reading and checking speed, not anything about real CT.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (the repository root on sys.path)
import h5py
import numpy as np

from ablations.framework.provenance import REPO_ROOT, machine, provenance
from datamodules.checks import RACY_SECONDS, default_workers
from datamodules.synapse import SynapseDataModule
from datamodules.synapse_layout import H5_SUFFIX, LIST_DIR, NPZ_SUFFIX, TEST_DIR, TEST_LIST, TRAIN_DIR, TRAIN_LIST

OUT = REPO_ROOT / "results" / "data_check_benchmark"


def write_set(root: Path, *, slices: int, volumes: int, depth: int, size: int, seed: int = 0) -> None:
    """Random arrays in the TransUNet release layout (a few distinct arrays, cycled)."""
    rng = np.random.default_rng(seed)
    images = [rng.random((size, size), dtype=np.float32) for _ in range(4)]
    labels = [rng.integers(0, 9, (size, size), dtype=np.uint8) for _ in range(4)]
    for folder in (TRAIN_DIR, TEST_DIR, LIST_DIR):
        (root / folder).mkdir(parents=True)
    names = [f"case{1000 + i // 150:04d}_slice{i % 150:03d}" for i in range(slices)]
    for i, name in enumerate(names):
        np.savez(root / TRAIN_DIR / f"{name}{NPZ_SUFFIX}", image=images[i % 4], label=labels[i % 4])
    cases = [f"case{2000 + j:04d}" for j in range(volumes)]
    for j, case in enumerate(cases):
        with h5py.File(root / TEST_DIR / f"{case}{H5_SUFFIX}", "w") as f:
            image = f.create_dataset("image", (depth, size, size), dtype=np.float32)
            label = f.create_dataset("label", (depth, size, size), dtype=np.uint8)
            for z in range(depth):
                image[z] = images[(j + z) % 4]
                label[z] = labels[(j + z) % 4]
    (root / LIST_DIR / TRAIN_LIST).write_text("".join(f"{n}\n" for n in names))
    (root / LIST_DIR / TEST_LIST).write_text("".join(f"{c}\n" for c in cases))


def evict(root: Path) -> bool:
    """Drop the set's files from the OS page cache (best effort); whether it was possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def time_check(dm: SynapseDataModule, *, level: str, workers: int, use_cache: bool, repeats: int,
               cold: bool = False) -> dict[str, Any]:
    seconds, read = [], []
    for _ in range(repeats):
        if cold:
            evict(Path(dm.data_dir))
        started = time.perf_counter()
        report = dm.check_data(None, level, progress=False, workers=workers, use_cache=use_cache)
        seconds.append(time.perf_counter() - started)
        read.append(report.num_read)
    gb = report.num_bytes / 1e9
    median = statistics.median(seconds)
    return {"level": level, "workers": workers, "check_cache": "used" if use_cache else "off",
            "os_page_cache": "evicted" if cold else "warm", "repeats": repeats,
            "seconds": [round(s, 3) for s in seconds],
            "seconds_median": round(median, 3), "gb_per_min": round(gb / (median / 60.0), 1),
            "files_read": read, "files": report.num_files}


def render(result: dict[str, Any]) -> str:
    data = result["data"]
    lines = [
        "# Data check speed (synthetic set in the Synapse release format)",
        "",
        f"Written by `{result['command']}` on {result['provenance']['created']} "
        f"(commit {result['provenance']['commit']}). **Synthetic** random arrays in the release format "
        f"(not real CT): {data['slices']} slices {data['size']}² (npz, float32 image + uint8 label) and "
        f"{data['volumes']} volumes {data['depth']}×{data['size']}² (h5, float32 + uint8): "
        f"{data['files']} files, **{data['gb']:.2f} GB** on disk.",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cpu_usable']} usable cores "
        f"(load {result['machine']['load_avg_1m']} at the start; shared, so timings are noisy); "
        f"default reading threads: {result['default_workers']}. Seconds: median of the repeats.",
        "",
        "| case | level | threads | check cache | OS page cache | files read | seconds | GB/min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['case']} | {run['level']} | {run['workers']} | {run['check_cache']} | {run['os_page_cache']} | "
            f"{run['files_read'][-1]} | {run['seconds_median']:.2f} ({', '.join(f'{s:.2f}' for s in run['seconds'])})"
            f" | {'—' if run['check_cache'] == 'used' else format(run['gb_per_min'], ',.1f')} |")
    lines += ["", f"Requirement: the full check under a minute per GB (≥ 1 GB/min): "
              f"**{'met' if result['requirement_met'] else 'NOT met'}** "
              f"(slowest full check without cache: {result['slowest_full_gb_per_min']:,.1f} GB/min).", ""]
    if not result["eviction_possible"]:
        lines += ["The OS page cache could not be dropped here; the 'evicted' rows were read from memory.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=2211)
    parser.add_argument("--volumes", type=int, default=12)
    parser.add_argument("--depth", type=int, default=148)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp-dir", default=None, help="where the temporary set is written (deleted afterwards)")
    parser.add_argument("--out", default=str(OUT), help="results path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="data-check-benchmark-", dir=args.tmp_dir))
    root, cache = tmp / "synapse", tmp / "cache"
    old_cache = os.environ.get("REPRO_CACHE_DIR")
    os.environ["REPRO_CACHE_DIR"] = str(cache)  # the check cache of this temporary set stays inside it
    try:
        started = time.perf_counter()
        write_set(root, slices=args.slices, volumes=args.volumes, depth=args.depth, size=args.size)
        write_seconds = time.perf_counter() - started
        print(f"wrote {root} in {write_seconds:.0f} s", file=sys.stderr)
        time.sleep(RACY_SECONDS + 0.5)  # fresh files are re-checked every time; a real data set is older
        dm = SynapseDataModule(data_dir=str(root), data_check="full")
        workers = default_workers()
        runs = []

        def record(case: str, **kwargs) -> None:
            runs.append({"case": case, **time_check(dm, **kwargs)})
            print(f"{case}: {runs[-1]['seconds_median']:.2f} s, {runs[-1]['gb_per_min']} GB/min", file=sys.stderr)

        eviction = evict(root)
        record("full, first run (files not in memory)", level="full", workers=workers, use_cache=False,
               repeats=args.repeats, cold=True)
        for n in sorted({1, workers}):
            record(f"full, {n} thread{'s' if n > 1 else ''}, files in memory", level="full", workers=n,
                   use_cache=False, repeats=args.repeats)
        record("fast (headers only)", level="fast", workers=workers, use_cache=False, repeats=args.repeats)
        dm.check_data(None, "full", progress=False, workers=workers)  # fills the check cache
        record("full, cached rerun (nothing changed)", level="full", workers=workers, use_cache=True,
               repeats=args.repeats)

        report = dm.check_data(None, "full", progress=False)
        full = [r for r in runs if r["level"] == "full" and r["check_cache"] == "off"]
        slowest = min(r["gb_per_min"] for r in full)
        result = {
            "benchmark": "data_check",
            "synthetic": True,
            "command": " ".join(["python reproduce/benchmark_data_check.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "data": {"slices": args.slices, "volumes": args.volumes, "depth": args.depth, "size": args.size,
                     "files": report.num_files, "bytes": report.num_bytes, "gb": round(report.num_bytes / 1e9, 3),
                     "format": "TransUNet Synapse release (npz float32/uint8, h5 float32/uint8, contiguous)",
                     "write_seconds": round(write_seconds, 1)},
            "default_workers": workers,
            "eviction_possible": eviction,
            "runs": runs,
            "slowest_full_gb_per_min": slowest,
            "requirement": "full check under 60 s per GB (>= 1 GB/min) on 2 cores",
            "requirement_met": slowest >= 1.0,
            "machine": machine(),
            "provenance": provenance(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old_cache is None:
            os.environ.pop("REPRO_CACHE_DIR", None)
        else:
            os.environ["REPRO_CACHE_DIR"] = old_cache
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
