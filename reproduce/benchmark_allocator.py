"""What keeping freed memory in the process (``lightning_modules.allocator``) does to CSWin-UNet's CPU training step.

    python reproduce/benchmark_allocator.py                  # 6 rounds, 8 timed steps per process
    python reproduce/benchmark_allocator.py --rounds 8 --steps 10

An allocator setting holds for a whole process, so unlike ``benchmark_ab.py`` this cannot
compare in one process: every arm runs in a fresh child process, the arms alternate in an
order that rotates and reverses from round to round, and each child reports the median of
its timed steps, with its minor page faults and system time per step. Arms:

* ``baseline/fp32/default``: the baseline commit's model (as ``benchmark_ab.py``), glibc defaults;
* ``ours/{fp32,bf16}/default``: the working tree, glibc defaults (``REPRO_KEEP_FREED_MEMORY=0``, the default);
* ``ours/{fp32,bf16}/keep``: the working tree with ``keep_freed_memory()``, as ``reproduce/train.py`` runs
  with ``REPRO_KEEP_FREED_MEMORY=1``.

The step is ``benchmark_ab.py``'s ``train`` step (batch 2 of 224² slices, the release's loss
and optimiser). Writes ``results/cswin_unet/allocator_ab.{json,md}``.
"""
import _bootstrap  # noqa: F401, I001  (first: puts the repository root on sys.path)

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import benchmark_ab as ab
from ablations.framework.provenance import machine

ARMS = ["baseline/fp32/default", "ours/fp32/default", "ours/fp32/keep", "ours/bf16/default", "ours/bf16/keep"]
#: (label, reference arm, variant arm): ratio > 1 means the variant is faster.
COMPARISONS = [
    ("fp32: keep vs default allocator (ours)", "ours/fp32/default", "ours/fp32/keep"),
    ("bf16: keep vs default allocator (ours)", "ours/bf16/default", "ours/bf16/keep"),
    ("fp32: ours (keep) vs baseline (default)", "baseline/fp32/default", "ours/fp32/keep"),
    ("bf16 ours (keep) vs baseline fp32 (default)", "baseline/fp32/default", "ours/bf16/keep"),
    ("fp32: ours vs baseline, both default (model code only)", "baseline/fp32/default", "ours/fp32/default"),
]
RESULT_TAG = "ALLOCATOR_AB_RESULT "


def run_child(arm: str, baseline_root: str, steps: int, warmup: int, threads: int, seed: int) -> dict:
    """Time ``steps`` train steps of one arm in this process; the allocator is set by the parent's env."""
    from lightning_modules.allocator import keep_freed_memory

    side, precision, allocator = arm.split("/")
    applied = keep_freed_memory() if allocator == "keep" else False
    if applied != (allocator == "keep"):
        raise SystemExit(f"{arm}: keep_freed_memory() did not take effect on this system")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if side == "baseline":
        ab.import_models_as(Path(baseline_root), "baseline_models")
        model = sys.modules["baseline_models.cswin_unet"].cswin_unet(num_classes=ab.CLASSES, img_size=ab.IMG)
    else:
        from models import create_model

        model = create_model("cswin_unet", num_classes=ab.CLASSES, img_size=ab.IMG)
    x, y = ab.random_batch(seed)
    step = ab.make_train_step(model, x, y, ab.release_loss(),
                              bf16=precision == "bf16", fused=side != "baseline")
    for _ in range(warmup):
        step()
    times, faults, system = [], [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        system.append(after.ru_stime - before.ru_stime)
    return {"arm": arm, "median_s": statistics.median(times), "times_s": times,
            "minor_faults_per_step": statistics.median(faults), "system_s_per_step": statistics.median(system)}


def spawn(arm: str, baseline_root: str, args) -> dict:
    env = dict(os.environ, REPRO_KEEP_FREED_MEMORY="1" if arm.endswith("/keep") else "0")
    cmd = [sys.executable, __file__, "--child", arm, "--baseline-root", baseline_root, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {arm} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per comparison, the ratios of the processes' median step times (paired by round)."""
    medians = {arm: [r["median_s"] for r in rs] for arm, rs in results.items()}
    return {label: ab.paired_ratios(ref, new, medians) for label, ref, new in COMPARISONS}


def render_markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        "# CSWin-UNet training step: glibc defaults against keeping freed memory",
        "",
        f"Written by `{doc['command']}` on {doc['date']}. Baseline `{doc['baseline'][:12]}`, "
        f"ours `{doc['ours'][:12]}`.",
        "",
        f"{ab.BATCH}×1×{ab.IMG}² synthetic input (random slices and labels, no data set), "
        f"{ab.CLASSES} classes, {s['threads']} PyTorch threads{ab.cpu_line(doc)}, the train step of "
        f"`benchmark_ab.py` ({ab.LOSS}; {ab.OPTIMIZER}). Every arm runs in its own process: {s['rounds']} rounds, "
        f"each arm once per round in a rotating order, {s['warmup']} untimed and {s['steps']} timed steps per "
        "process; a process reports the median of its steps. `keep` is `lightning_modules.allocator."
        "keep_freed_memory()`, which `reproduce/train.py` and the table runners apply with "
        "`REPRO_KEEP_FREED_MEMORY=1`; `default` is glibc unchanged (the default).",
        "",
        "Between processes a 2-core shared machine varies more than within one, so the per-round "
        "range is wide; the medians are the result. Ratio > 1: the variant is faster.",
        "",
        *ab.ratio_table(doc["ratios"], minimums=False),
    ]
    lines += ["", "| arm | median s/step | minor page faults per step | system CPU s per step |", "|---|---|---|---|"]
    for arm, rs in doc["results"].items():
        lines.append(f"| {arm} | {statistics.median(r['median_s'] for r in rs):.3f} | "
                     f"{statistics.median(r['minor_faults_per_step'] for r in rs):,.0f} | "
                     f"{statistics.median(r['system_s_per_step'] for r in rs):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=ab.DEFAULT_BASELINE, help="baseline commit (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ab.REPO_ROOT / "results" / "cswin_unet")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_child(args.child, args.baseline_root, args.steps, args.warmup, args.threads, args.seed)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    baseline_commit = ab.git("rev-parse", "--verify", args.baseline + "^{commit}")
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="allocator_ab_") as tmp:
        ab.extract_models(baseline_commit, Path(tmp))
        for r in range(args.rounds):
            order = ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]
            if r % 2:
                order.reverse()
            for arm in order:
                results[arm].append(spawn(arm, tmp, args))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{arm} {results[arm][-1]['median_s']:.3f}s" for arm in ARMS), flush=True)
    doc = {
        "command": " ".join(["python reproduce/benchmark_allocator.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "baseline": baseline_commit,
        "ours": ab.git("rev-parse", "HEAD"),
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                     "seed": args.seed,
                     "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "machine": machine(),
        "ratios": summarise(results),
        "results": results,
    }
    ab.write_report(doc, args.out_dir, "allocator_ab", render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
