"""Complexity and throughput of every registered model: ``results/benchmarks.{json,md}``.

Usage (from the repository root)::

    python reproduce/benchmark.py                          # every non-test model
    python reproduce/benchmark.py --models 'cswin*' --iters 50
    python reproduce/benchmark.py --models cswin_unet_test --include-test --out-dir /tmp/bench

For each model, built with its registry defaults, at the registry input size:

* **Parameters**, total and trainable (:func:`lightning_modules.complexity.count_parameters`).
* **MACs, two conventions**, per image (counted on a batch of 1):
  ``macs_conv_linear`` (Conv/Linear module hooks, the thop-style number that papers
  label "FLOPs") and ``macs_all`` (``FlopCounterMode`` / 2, every matrix product);
  definitions in :mod:`lightning_modules.complexity`.
* **CPU throughput and peak memory** (float32, ``--batch-size`` images per step):
  forward in eval mode under ``torch.no_grad()``, and forward + backward in train
  mode with loss ``output.float().mean()``; ``--warmup`` untimed steps, then
  ``--iters`` timed ones. Peak memory is the tensor memory a step allocates
  (measured with the profiler, a lower bound on RSS growth); details in
  :mod:`lightning_modules.profiling`.
* **CUDA** (only when ``torch.cuda.is_available()`` and not ``--no-cuda``): the
  same steps in bf16-mixed with ``--cuda-warmup`` / ``--cuda-iters`` steps; peak
  memory from ``torch.cuda.max_memory_allocated()`` above the memory before the step.

Reference numbers (:data:`REFERENCES`) are printed beside ours with their source;
ours are always computed. The Markdown is rendered from the JSON by
:func:`render_markdown`, so ``benchmarks.md`` can be checked against ``benchmarks.json``.
"""
from __future__ import annotations

import os

# Kineto (the profiler back-end) logs start/stop lines and "no GPU" errors on CPU-only machines.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from lightning_modules.complexity import (  # noqa: E402
    MAC_CONVENTIONS,
    count_parameters,
    macs_all_by_op,
    macs_conv_linear,
)
from lightning_modules.profiling import MIB, benchmark_cpu, benchmark_cuda, state_bytes  # noqa: E402
from models import create_model, list_models, model_info  # noqa: E402

__all__ = ["REFERENCES", "REFERENCE_LABELS", "benchmark_model", "render_markdown", "environment", "main"]

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Reference numbers, keyed by model name. Each entry: the input it was measured at, a source
# string, and any of the keys of REFERENCE_LABELS (integers; None where unknown).
# ---------------------------------------------------------------------------------------------
REFERENCES: dict[str, dict[str, Any]] = {
    "cswin_unet": {
        "source": "[measured] official code @ 4e47abe (shared/papers/cswin_unet.md §2.7, Addendum 6)",
        "input_size": [3, 224, 224],
        "params_total": 23_568_492,
        "macs_conv_linear": 4_707_035_648,
        "macs_thop": 4_723_493_376,
        "macs_all": 5_014_112_768,
    },
}

#: What each reference key means; keys shared with our records are compared exactly.
REFERENCE_LABELS: dict[str, str] = {
    "params_total": "parameters",
    "macs_conv_linear": "MACs, Conv + Linear only",
    "macs_thop": "MACs, thop.profile as the official test.py (Conv + Linear + 4 per LayerNorm element)",
    "macs_all": "MACs, all matrix products",
}

CPU_TIMING_NOTE = (
    "CPU timings come from a {cores}-core machine ({threads} PyTorch threads) and are only meaningful "
    "as ratios between models of one run; absolute times are only meaningful from a GPU."
)



# ---------------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------------
def reference_for(name: str, input_size: tuple[int, ...]) -> dict[str, Any] | None:
    """The reference entry of ``name`` if it was measured at ``input_size``."""
    ref = REFERENCES.get(name)
    if ref is None or tuple(ref.get("input_size", input_size)) != tuple(input_size):
        return None
    return dict(ref)


def benchmark_model(
    name: str,
    *,
    batch_size: int = 1,
    warmup: int = 3,
    iters: int = 20,
    cuda: bool = True,
    cuda_warmup: int = 10,
    cuda_iters: int = 50,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything measured for one registered model, as a JSON-serialisable record."""
    progress = progress or (lambda stage: None)
    info = model_info(name)
    torch.manual_seed(0)
    model = create_model(name)
    params = count_parameters(model)
    record: dict[str, Any] = {
        "model": name,
        "paper": info.paper,
        "task": info.task,
        "input_size": list(info.input_size),
        "batch_size": batch_size,
        "params_total": params.total,
        "params_trainable": params.trainable,
        "weights_mib": round(state_bytes(model) / MIB, 2),
    }
    progress("MACs")
    one = torch.randn(1, *info.input_size)
    record["macs_conv_linear"] = macs_conv_linear(model, one)
    by_op = macs_all_by_op(model, one)
    record["macs_all"] = sum(by_op.values())
    record["macs_all_by_op"] = by_op

    ref = reference_for(name, info.input_size)
    record["reference"] = ref
    record["reference_match"] = (
        {key: record[key] == ref[key] for key in REFERENCE_LABELS if key in record and ref.get(key) is not None}
        if ref
        else None
    )

    x = torch.randn(batch_size, *info.input_size)
    progress("CPU")
    record["cpu"] = benchmark_cpu(model, x, warmup, iters)
    record["cuda"] = None
    if cuda and torch.cuda.is_available():
        progress("CUDA")
        record["cuda"] = benchmark_cuda(model, x, cuda_warmup, cuda_iters)
    return record


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(command: str) -> dict[str, Any]:
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable_cores = os.cpu_count()
    cuda = torch.cuda.is_available()
    status = _git("status", "--porcelain")
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable_cores,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
DASH = "—"


def _num(value: float | int | None, unit: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value / unit:,.{digits}f}"


def _get(record: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pair(a: Any, b: Any) -> str:
    if a is None and b is None:
        return DASH
    return f"{_num(a, digits=1)} / {_num(b, digits=1)}"


def _delta(ours: int | None, ref: int | None) -> str:
    if ours is None or ref is None:
        return DASH
    if ours == ref:
        return "exact"
    return f"{ours - ref:+,d} ({(ours - ref) / ref:+.3%})"


def render_markdown(data: Mapping[str, Any]) -> str:
    """The Markdown report of a ``benchmarks.json`` document (pure function of ``data``)."""
    env = data["environment"]
    settings = data["settings"]
    records = data["models"]
    lines = [
        "# Model complexity and throughput",
        "",
        "Written by `reproduce/benchmark.py` from `benchmarks.json`; do not edit by hand.",
        "",
        f"- Command: `{env['command']}`",
        f"- Commit: `{env.get('git_commit') or 'unknown'}`"
        + (" (uncommitted changes)" if env.get("git_dirty") else ""),
        f"- Date (UTC): {env['date']}; torch {env['torch']}, Python {env['python']}",
        f"- CPU: {env['cpu']}, {env['cpu_usable']} usable cores of {env['cpu_count']}, "
        f"{env['torch_threads']} PyTorch threads; 1-min load average {_num(env.get('load_avg_1m'))} "
        "before the run (other processes on the machine slow the timings)",
        "- CUDA: "
        + (", ".join(env["cuda_devices"]) if env.get("cuda_devices") else "not available (CUDA columns: —)"),
        f"- Batch size {settings['batch_size']} for timing and memory; CPU: {settings['warmup']} warm-up + "
        f"{settings['iters']} timed steps (median); CUDA: {settings['cuda_warmup']} + {settings['cuda_iters']}. "
        "MACs are per image (counted at batch 1).",
        "",
        "**" + CPU_TIMING_NOTE.format(cores=env["cpu_usable"], threads=env["torch_threads"]) + "**",
        "",
        "MAC conventions (1 MAC = one multiply-add; papers' \"FLOPs\" from thop are MACs):",
        "",
    ]
    for key, text in data.get("mac_conventions", {}).items():
        lines.append(f"- `{key}`: {text}.")
    lines += [
        "",
        "## Summary",
        "",
        "| model | input | params (M) | MACs conv+linear (G) | MACs all (G) | ref params (M) "
        "| ref MACs conv+linear (G) | ref MACs thop (G) | ref MACs all (G) | CPU fwd (img/s) "
        "| CPU fwd+bwd (img/s) | CPU peak mem fwd / fwd+bwd (MiB) | CUDA bf16 fwd (img/s) "
        "| CUDA bf16 fwd+bwd (img/s) | CUDA peak mem fwd / fwd+bwd (MiB) |",
        "|---|---|" + "---:|" * 13,
    ]
    for rec in records:
        ref = rec.get("reference") or {}
        size = "×".join(str(s) for s in rec["input_size"])
        if rec.get("error"):
            error = _cell(rec["error"].splitlines()[-1])
            lines.append(f"| {rec['model']} | {size} | failed: {error} |" + f" {DASH} |" * 12)
            continue
        cells = [
            rec["model"],
            size,
            _num(rec.get("params_total"), 1e6),
            _num(rec.get("macs_conv_linear"), 1e9),
            _num(rec.get("macs_all"), 1e9),
            _num(ref.get("params_total"), 1e6),
            _num(ref.get("macs_conv_linear"), 1e9),
            _num(ref.get("macs_thop"), 1e9),
            _num(ref.get("macs_all"), 1e9),
            _num(_get(rec, "cpu", "fwd", "img_per_s")),
            _num(_get(rec, "cpu", "fwd_bwd", "img_per_s")),
            _pair(_get(rec, "cpu", "fwd", "peak_mem_mib"), _get(rec, "cpu", "fwd_bwd", "peak_mem_mib")),
            _num(_get(rec, "cuda", "fwd", "img_per_s")),
            _num(_get(rec, "cuda", "fwd_bwd", "img_per_s")),
            _pair(_get(rec, "cuda", "fwd", "peak_mem_mib"), _get(rec, "cuda", "fwd_bwd", "peak_mem_mib")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Peak memory: tensor memory allocated during one step on top of the weights and the input "
        "(CPU: running sum of the allocations recorded by `torch.profiler` with `profile_memory=True`; "
        "CUDA: `torch.cuda.max_memory_allocated()` minus `memory_allocated()` before the step).",
        "",
        "## Exact counts against the references",
        "",
        "| model | quantity | ours | reference | ours − reference |",
        "|---|---|---:|---:|---|",
    ]
    sources: list[str] = []
    for rec in records:
        ref = rec.get("reference")
        if rec.get("error") or not ref:
            continue
        sources.append(f"- {rec['model']}: {ref['source']}")
        for key, label in REFERENCE_LABELS.items():
            if ref.get(key) is None and rec.get(key) is None:
                continue
            ours = rec.get(key)
            ours_text = _num(ours, digits=0) if key in rec else "not computed"
            lines.append(
                f"| {rec['model']} | {label} | {ours_text} | {_num(ref.get(key), digits=0)} "
                f"| {_delta(ours, ref.get(key))} |"
            )
    if not sources:
        lines.append(f"| {DASH} | no reference numbers for these models | | | |")
    lines += ["", "Reference sources:", ""] + (sources or ["- none"])
    lines += ["", "## MACs of all matrix products, by ATen op (G)", ""]
    for rec in records:
        by_op = rec.get("macs_all_by_op")
        if by_op:
            parts = ", ".join(f"`{op}` {_num(v, 1e9, 3)}" for op, v in by_op.items())
            lines.append(f"- {rec['model']}: {parts}")
    errors = [rec for rec in records if rec.get("error")]
    if errors:
        lines += ["", "## Failures", ""]
        for rec in errors:
            lines.append(f"- {rec['model']}: {_cell(rec['error'].splitlines()[-1])}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="*", help="glob over registered model names (default: all)")
    parser.add_argument("--include-test", action="store_true", help="also benchmark the tiny *_test models")
    parser.add_argument("--batch-size", type=int, default=1, help="images per timed step (MACs are always per image)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed CPU steps before timing")
    parser.add_argument("--iters", type=int, default=20, help="timed CPU steps (the median is reported)")
    parser.add_argument("--cuda-warmup", type=int, default=10, help="untimed CUDA steps before timing")
    parser.add_argument("--cuda-iters", type=int, default=50, help="timed CUDA steps")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements even if a GPU is present")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    parser.add_argument("--out-dir", type=Path, default=Path("results"), help="where benchmarks.json/.md go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("--batch-size and --iters must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_models(args.models, include_test=args.include_test)
    if not names:
        hint = "" if args.include_test else " (add --include-test to include the *_test models)"
        raise SystemExit(f"no registered model matches {args.models!r}{hint}; registered: {', '.join(list_models())}")

    command = shlex.join(["python", "reproduce/benchmark.py", *argv])
    env = environment(command)  # before the run: the date and load average are the starting ones
    started = time.perf_counter()
    records = []
    bar = tqdm(names, desc="benchmark", unit="model")
    for name in bar:
        bar.set_postfix_str(name)
        try:
            record = benchmark_model(
                name,
                batch_size=args.batch_size,
                warmup=args.warmup,
                iters=args.iters,
                cuda=not args.no_cuda,
                cuda_warmup=args.cuda_warmup,
                cuda_iters=args.cuda_iters,
                progress=lambda stage, name=name: bar.set_postfix_str(f"{name}: {stage}"),
            )
        except Exception:  # one broken model must not lose the other models' numbers
            error = traceback.format_exc()
            tqdm.write(f"{name} failed:\n{error}", file=sys.stderr)
            record = {"model": name, "input_size": list(model_info(name).input_size), "error": error.strip()}
        records.append(record)

    data = {
        "schema_version": SCHEMA_VERSION,
        "environment": env,
        "settings": {
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "iters": args.iters,
            "cuda_warmup": args.cuda_warmup,
            "cuda_iters": args.cuda_iters,
            "cuda": (not args.no_cuda) and torch.cuda.is_available(),
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
        "mac_conventions": dict(MAC_CONVENTIONS),
        "models": records,
    }
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "benchmarks.md").write_text(render_markdown(data))
    print(f"wrote {out_dir / 'benchmarks.json'} and {out_dir / 'benchmarks.md'} ({data['settings']['elapsed_s']} s)")
    return 1 if any(rec.get("error") for rec in records) else 0


if __name__ == "__main__":
    sys.exit(main())
