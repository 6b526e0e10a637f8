"""Markdown rendering of ``results/benchmarks.json`` (schema in :mod:`ablations.framework.benchmarks`).

The output depends on the document only (no clock, no environment, no import of
the benchmark itself), so a test can check that the committed ``benchmarks.md``
is exactly the rendering of the committed ``benchmarks.json``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ablations.framework.provenance import describe_cpu

__all__ = ["render_markdown", "CPU_TIMING_NOTE", "PRECISION_LABELS"]

DASH = "—"

CPU_TIMING_NOTE = (
    "Absolute CPU times are only comparable within one run: they come from a {cores}-core machine "
    "({threads}) shared with other work, so compare ratios between rows of this run "
    "(model against model, bf16 against fp32), not times across runs or machines."
)

#: How the tables name the precisions of :data:`lightning_modules.profiling.PRECISIONS`.
PRECISION_LABELS = {"32-true": "fp32", "bf16-mixed": "bf16 autocast"}

#: Our record keys shown in the summary, with their reference columns.
_SUMMARY_KEYS = (("params_total", "params (M)", 1e6), ("macs_conv_linear", "MACs conv+linear (G)", 1e9),
                 ("macs_all", "MACs all (G)", 1e9))


def _num(value: float | int | None, unit: float = 1.0, digits: int = 2) -> str:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value / unit:,.{digits}f}"


def _get(record: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pair(a: Any, b: Any) -> str:
    if a is None and b is None:
        return DASH
    return f"{_num(a, digits=1)} / {_num(b, digits=1)}"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return DASH
    return f"{a / b:.2f}×"


def _delta(ours: int | None, ref: int | None) -> str:
    if ours is None or ref is None:
        return DASH
    if ours == ref:
        return "exact"
    return f"{ours - ref:+,d} ({(ours - ref) / ref:+.3%})" if ref else f"{ours - ref:+,d}"


def _threads(count: Any) -> str:
    return f"{count if count is not None else DASH} PyTorch thread" + ("" if count == 1 else "s")


def _error_line(record: Mapping[str, Any]) -> str:
    return _cell(str(record["error"]).splitlines()[-1])


def _header(data: Mapping[str, Any]) -> list[str]:
    env = data.get("environment", {})
    host = data.get("machine", {})
    settings = data["settings"]
    precisions = ", ".join(f"{PRECISION_LABELS.get(p, p)} (`{p}`)" for p in settings.get("precisions", []))
    commit = data.get("commit") or "unknown"
    return [
        "# Model complexity and throughput",
        "",
        "Written by `reproduce/benchmark.py` from `benchmarks.json`; do not edit by hand.",
        "",
        f"- Command: `{data.get('command', '')}`",
        f"- Commit: `{commit}`" + (" (tracked code outside `results/` had uncommitted changes)"
                                   if data.get("dirty") else ""),
        f"- Created (UTC): {data.get('created', DASH)}; torch {env.get('torch', DASH)}, "
        f"Python {env.get('python', DASH)}",
        f"- CPU: {describe_cpu(host) if 'cpu_features' in host else host.get('cpu', DASH)}, "
        f"{host.get('cpu_usable', DASH)} usable cores of "
        f"{host.get('cpu_count', DASH)}, {_threads(host.get('torch_threads'))}; 1-min load average "
        f"{_num(host.get('load_avg_1m'))} before the run (other processes on the machine slow the timings)",
        "- CUDA: " + (", ".join(host["cuda_devices"]) if host.get("cuda_devices") else "not available (no CUDA rows)"),
        (f"- Batch size {settings['batch_size']} for timing and memory; precisions: {precisions}; CPU: "
         f"{settings['warmup']} warm-up + {settings['iters']} timed steps (median); CUDA: "
         f"{settings['cuda_warmup']} + {settings['cuda_iters']}. MACs are per image (counted at batch 1)."
         if settings.get("timing", True) else
         "- Counts only (`--no-timing`): parameters and MACs per image, counted on the meta device; nothing timed."),
        f"- The whole benchmark took {_num(settings.get('elapsed_s'), digits=1)} s.",
        "",
        "**" + CPU_TIMING_NOTE.format(cores=host.get("cpu_usable", "?"), threads=_threads(host.get("torch_threads")))
        + "**",
        "",
        "MAC conventions (1 MAC = one multiply-add; papers' \"FLOPs\" from thop are MACs):",
        "",
    ] + [f"- `{key}`: {text}." for key, text in data.get("mac_conventions", {}).items()]


def _complexity(records: list[Mapping[str, Any]]) -> list[str]:
    head = [label for _, label, _ in _SUMMARY_KEYS]
    lines = [
        "",
        "## Complexity",
        "",
        "| model | input | " + " | ".join(head) + " | " + " | ".join(f"ref {h}" for h in head) + " |",
        "|---|---|" + "---:|" * (2 * len(head)),
    ]
    for rec in records:
        size = "×".join(str(s) for s in rec["input_size"])
        if rec.get("error"):
            lines.append(f"| {rec['model']} | {size} | failed: {_error_line(rec)} |"
                         + f" {DASH} |" * (2 * len(head) - 1))
            continue
        values = _get(rec, "reference", "values") or {}
        cells = [rec["model"], size]
        cells += [_num(rec.get(key), unit) for key, _, unit in _SUMMARY_KEYS]
        cells += [_num(values.get(key), unit) for key, _, unit in _SUMMARY_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _throughput(records: list[Mapping[str, Any]]) -> list[str]:
    runs_of = [run for rec in records for device in ("cpu", "cuda") if isinstance(rec.get(device), Mapping)
               for run in rec[device].values() if isinstance(run, Mapping)]
    interleaved = (
        " The steps of one model on one device (both precisions, forward and train step) were timed "
        "round-robin, so load on the machine slowed them alike; models were timed one after another."
        if runs_of and all(len(run.get("interleaved_with", [])) > 1 for run in runs_of) else ""
    )
    lines = [
        "",
        "## Throughput and peak memory",
        "",
        "Forward: eval mode under `torch.no_grad()`. Train step: train mode, forward + backward of "
        "`output.float().mean()` (no optimiser). bf16 autocast: the step under "
        "`torch.autocast(device, dtype=torch.bfloat16)` with float32 weights. \"vs fp32\": train-step "
        "images/s over the same model's fp32 train step on the same device." + interleaved,
        "",
        "| model | device | precision | forward (img/s) | train step (img/s) | train step (ms, median) "
        "| train step vs fp32 | peak mem forward / train step (MiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = 0
    for rec in records:
        if rec.get("error"):
            continue
        for device, label in (("cpu", "CPU"), ("cuda", "CUDA")):
            runs = rec.get(device)
            if not isinstance(runs, Mapping):
                continue
            base = _get(runs, "32-true", "fwd_bwd", "img_per_s")
            for precision, run in runs.items():
                name = f"{label} ({run['device']})" if device == "cuda" and run.get("device") else label
                lines.append("| " + " | ".join([
                    rec["model"],
                    name,
                    PRECISION_LABELS.get(precision, precision),
                    _num(_get(run, "fwd", "img_per_s")),
                    _num(_get(run, "fwd_bwd", "img_per_s")),
                    _num(_get(run, "fwd_bwd", "median_ms"), digits=1),
                    _ratio(_get(run, "fwd_bwd", "img_per_s"), base),
                    _pair(_get(run, "fwd", "peak_mem_mib"), _get(run, "fwd_bwd", "peak_mem_mib")),
                ]) + " |")
                rows += 1
    if not rows:
        lines.append(f"| {DASH} | no timings | | | | | | |")
    lines += [
        "",
        "Peak memory: tensor memory allocated during one step on top of the weights and the input "
        "(CPU: running sum of the allocations recorded by `torch.profiler` with `profile_memory=True`, "
        "a lower bound on the process's memory growth; CUDA: `torch.cuda.max_memory_allocated()` minus "
        "`memory_allocated()` before the step).",
    ]
    return lines


def _references(records: list[Mapping[str, Any]]) -> list[str]:
    lines = [
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
        sources.append(f"- {rec['model']}: {ref['source']} (`{ref['file']}`)")
        values = ref.get("values", {})
        for key, label in ref.get("labels", {}).items():
            ours = rec.get(key)
            ours_text = _num(ours, digits=0) if key in rec else "not computed"
            lines.append(
                f"| {rec['model']} | {_cell(label)} | {ours_text} | {_num(values.get(key), digits=0)} "
                f"| {_delta(ours, values.get(key))} |"
            )
    if not sources:
        lines.append(f"| {DASH} | no reference numbers for these models | | | |")
    return lines + ["", "Reference sources:", ""] + (sources or ["- none"])


def render_markdown(data: Mapping[str, Any]) -> str:
    """The Markdown report of a ``benchmarks.json`` document (a pure function of ``data``)."""
    records = list(data["models"])
    lines = _header(data) + _complexity(records) + _throughput(records) + _references(records)
    lines += ["", "## MACs of all matrix products, by ATen op (G)", ""]
    for rec in records:
        by_op = rec.get("macs_all_by_op")
        if by_op:
            parts = ", ".join(f"`{op}` {_num(v, 1e9, 3)}" for op, v in by_op.items())
            lines.append(f"- {rec['model']}: {parts}")
    errors = [rec for rec in records if rec.get("error")]
    if errors:
        lines += ["", "## Failures", ""] + [f"- {rec['model']}: {_error_line(rec)}" for rec in errors]
    return "\n".join(lines) + "\n"
