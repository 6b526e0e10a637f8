"""SLAB's latency claim, measured: merged / unmerged SLAB, LayerNorm and softmax forms of one network.

    python reproduce/benchmark_slab_latency.py --threads 2               # DeiT-T, results/slab/latency.*
    python reproduce/benchmark_slab_latency.py --family swin --out-dir /tmp/swin
    python reproduce/benchmark_slab_latency.py --quick --out-dir /tmp/q  # tiny sizes, seconds (CI/tests)
    python reproduce/benchmark_slab_latency.py --render-only             # latency.md/.png from latency.json

The paper reports latency without its hardware, batch or protocol (spec §4: unknown), so
the claim reproduced here is relative: the forms of one network, timed in one run, through
the same constructors (``models/slab.py``; DeiT-T by default, ``--family swin`` for Swin-T):

* ``ln_softmax``: LayerNorm + softmax attention (DeiT-T itself) — the baseline of every ratio;
* ``ln_sla``: LayerNorm + SLA; ``repbn_softmax_merged``: RepBN folded away + softmax;
* ``slab_unmerged``: SLAB (PRepBN, whose eval path is RepBN, + SLA) as trained;
* ``slab_merged``: the same model re-parameterised (``merge()``: every RepBN folded into its
  neighbour); the largest output difference to ``slab_unmerged`` is recorded.

``--family cswin_unet`` times the same five forms of CSWin-UNet with SLAB in its blocks (the
project extension of :mod:`models.cswin_unet_slab`; "softmax" = its cross-shaped stripe attention).

Timing (``lightning_modules.profiling``): the eval, ``no_grad`` forward of every model once
per round, round-robin (:func:`~lightning_modules.profiling.time_steps`), so the load of a
shared machine hits all models alike. Per model: median / minimum step time and images/s; per
model against the baseline three throughput ratios (> 1: faster than the baseline): of the
medians, the median of the per-round (paired) ratios, and of the minimums. On CUDA (when
present and not ``--no-cuda``) the same models are timed at batch 1 (latency) and at
``--cuda-batch`` (throughput), synchronised around each step, float32.

Two sweeps over the token count N show where linear and softmax attention part: the attention
layer alone (DeiT-T width 192, 3 heads, batch 1, an N = g × g token grid: SLA against timm's
fused softmax ``Attention``), and the whole DeiT-T baseline against merged SLAB-DeiT-T over image
sizes (N = (size/16)²). Writes ``latency.json`` (with provenance: commit, dirty flag, machine,
load average before and after, threads, command), ``latency.md`` rendered from it alone and
``latency.png`` (matplotlib, Agg).

Threads: a thread check first times the baseline forward at 1 thread, at ``--threads`` and at the
usable core count, round-robin, and the Markdown says which was fastest. On a machine whose cores
other jobs also use, more threads can be several times slower (measured on the project's shared
2-core machine at load 5: DeiT-T 224² batch 1 took 44 ms at 1 thread, 225 ms at 2), so the
committed run uses ``--threads 1``.
"""
import _bootstrap  # noqa: F401, I001  (first: puts the repository root on sys.path)

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Attention
from torch import nn
from tqdm.auto import tqdm

from ablations.framework.provenance import REPO_ROOT, machine, provenance
from lightning_modules.profiling import make_steps, summarize_times, time_steps
from models import create_model
from models.layers.linear_attention import SimplifiedLinearAttention

SCHEMA = "slab_latency/1"
BASELINE = "ln_softmax"
FAMILIES = {"deit": "slab_deit_t", "swin": "slab_swin_t", "cswin_unet": "cswin_unet"}
QUICK_FAMILIES = {"deit": "slab_deit_t", "swin": "slab_swin_test", "cswin_unet": "cswin_unet_test"}
#: Constructor spellings that differ from SLAB's (CSWin-UNet + SLAB, models/cswin_unet_slab.py).
SPELLINGS = {"cswin_unet": {"ln": "layernorm", "softmax": "cswin"}}
#: (key, label, constructor overrides, merged): the forms of one network, the baseline first.
FORMS = [
    ("ln_softmax", "LayerNorm + softmax (baseline)", dict(norm="ln", attention="softmax"), False),
    ("ln_sla", "LayerNorm + SLA", dict(norm="ln", attention="sla"), False),
    ("repbn_softmax_merged", "RepBN merged + softmax", dict(norm="prepbn", attention="softmax"), True),
    ("slab_unmerged", "SLAB unmerged (PRepBN eval path = RepBN, + SLA)", dict(norm="prepbn", attention="sla"), False),
    ("slab_merged", "SLAB merged (RepBN folded, + SLA)", dict(norm="prepbn", attention="sla"), True),
]
LAYER_DIM, LAYER_HEADS = 192, 3  # DeiT-T's attention
GRIDS = {"full": (14, 28, 42, 56, 84, 112), "quick": (4, 8, 16)}
IMAGE_SIZES = {"full": (112, 224, 336, 448), "quick": (32, 64)}
QUICK_DEIT = dict(depth=2, img_size=64)  # 4 × 4 patches
#: A sweep point is timed for at least this long (more rounds for the fast small-N points, at most 200).
SWEEP_MIN_SECONDS = 4.0


# ------------------------------------------------------------------------------------------- models
def build_forms(family: str, quick: bool, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{key: {"label", "model" (eval), "merged", "params", "constructor"}}`` for :data:`FORMS`."""
    name = (QUICK_FAMILIES if quick else FAMILIES)[family]
    extra = QUICK_DEIT if quick and family == "deit" else {}
    forms = {}
    spell = SPELLINGS.get(family, {})
    for key, label, overrides, merged in FORMS:
        overrides = {k: spell.get(v, v) for k, v in overrides.items()}
        torch.manual_seed(seed)
        model = create_model(name, **overrides, **extra).eval()
        if merged:
            model = model.merge()
        forms[key] = {"label": label, "model": model, "merged": merged,
                      "params": sum(p.numel() for p in model.parameters()),
                      "constructor": f"{name}({', '.join(f'{k}={v!r}' for k, v in {**overrides, **extra}.items())})"
                                     + (".merge()" if merged else "")}
    return forms


def input_size(family: str, quick: bool) -> int:
    if family == "deit":
        return QUICK_DEIT["img_size"] if quick else 224
    return 64 if quick else 224


@torch.no_grad()
def merge_difference(forms: dict[str, dict[str, Any]], x: torch.Tensor) -> float:
    """Largest |merged − unmerged| SLAB output on ``x`` (eval; float rounding only)."""
    return float((forms["slab_merged"]["model"](x) - forms["slab_unmerged"]["model"](x)).abs().max())


# ------------------------------------------------------------------------------------------- timing
def ratios(times: dict[str, list[float]], baseline: str = BASELINE) -> dict[str, dict[str, float]]:
    """Throughput of each key relative to ``baseline`` (> 1: faster): of medians, paired rounds, minimums."""
    base = times[baseline]
    out = {}
    for key, own in times.items():
        paired = [b / t for b, t in zip(base, own, strict=True)]
        out[key] = {"ratio_of_medians": round(statistics.median(base) / statistics.median(own), 4),
                    "median_of_paired_ratios": round(statistics.median(paired), 4),
                    "paired_ratio_min": round(min(paired), 4), "paired_ratio_max": round(max(paired), 4),
                    "ratio_of_minimums": round(min(base) / min(own), 4)}
    return out


def time_forms(forms: dict[str, dict[str, Any]], x: torch.Tensor, warmup: int, rounds: int,
               sync: Callable[[], None] | None = None) -> dict[str, Any]:
    """Round-robin eval forwards of every form on ``x`` (already on the forms' device)."""
    steps = {key: make_steps(form["model"], x)["fwd"] for key, form in forms.items()}
    times = time_steps(steps, warmup, rounds, sync=sync)
    return {"batch_size": x.shape[0], "timings": {k: summarize_times(t, x.shape[0]) for k, t in times.items()},
            "ratios": ratios(times)}


def rounds_for(steps: dict[str, Callable[[], None]], rounds: int, min_seconds: float, cap: int = 200,
               sync: Callable[[], None] | None = None) -> int:
    """At least ``rounds`` and enough for ``min_seconds`` of timing (one round timed to estimate), at most ``cap``."""
    if min_seconds <= 0:
        return rounds
    start = time.perf_counter()
    for step in steps.values():
        step()
    if sync:
        sync()
    per_round = max(time.perf_counter() - start, 1e-6)
    return max(rounds, min(cap, math.ceil(min_seconds / per_round)))


def _sweep_point(steps: dict[str, Callable[[], None]], warmup: int, rounds: int, batch: int,
                 sync: Callable[[], None] | None, baseline: str, min_seconds: float) -> dict[str, Any]:
    for _ in range(warmup):
        for step in steps.values():
            step()
    rounds = rounds_for(steps, rounds, min_seconds, sync=sync)
    times = time_steps(steps, 0, rounds, sync=sync)
    return {"rounds": rounds, "timings": {k: summarize_times(t, batch) for k, t in times.items()},
            "ratios": {k: v for k, v in ratios(times, baseline).items() if k != baseline}}


def layer_sweep(grids: tuple[int, ...], warmup: int, rounds: int, device: torch.device,
                sync: Callable[[], None] | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    """SLA vs timm's softmax ``Attention`` over ``g × g`` tokens (width 192, 3 heads, batch 1, eval)."""
    points = []
    for g in tqdm(grids, desc=f"attention layer sweep ({device.type})", unit="grid"):
        torch.manual_seed(0)
        layers = {"softmax": Attention(LAYER_DIM, LAYER_HEADS, qkv_bias=True),
                  "sla": SimplifiedLinearAttention(LAYER_DIM, LAYER_HEADS, window_size=(g, g))}
        x = torch.randn(1, g * g, LAYER_DIM, device=device)
        steps = {k: make_steps(m.to(device).eval(), x)["fwd"] for k, m in layers.items()}
        points.append({"grid": g, "tokens": g * g,
                       **_sweep_point(steps, warmup, rounds, 1, sync, "softmax", min_seconds)})
    return {"dim": LAYER_DIM, "heads": LAYER_HEADS, "batch_size": 1, "device": device.type,
            "softmax": "timm.models.vision_transformer.Attention (fused scaled_dot_product_attention)",
            "sla": "models.layers.linear_attention.SimplifiedLinearAttention (window = the g × g grid)",
            "points": points}


def model_sweep(sizes: tuple[int, ...], warmup: int, rounds: int, quick: bool, device: torch.device,
                sync: Callable[[], None] | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    """DeiT-T (LayerNorm + softmax) against merged SLAB-DeiT-T over image sizes (batch 1, eval)."""
    extra = {"depth": QUICK_DEIT["depth"]} if quick else {}
    points = []
    for size in tqdm(sizes, desc=f"image-size sweep ({device.type})", unit="size"):
        torch.manual_seed(0)
        models = {"ln_softmax": create_model("slab_deit_t", norm="ln", attention="softmax", img_size=size, **extra),
                  "slab_merged": create_model("slab_deit_t", img_size=size, **extra).eval().merge()}
        x = torch.randn(1, 3, size, size, device=device)
        steps = {k: make_steps(m.to(device).eval(), x)["fwd"] for k, m in models.items()}
        points.append({"img_size": size, "tokens": (size // 16) ** 2,
                       **_sweep_point(steps, warmup, rounds, 1, sync, "ln_softmax", min_seconds)})
    return {"network": "DeiT-T" + (f" (depth {extra['depth']})" if extra else ""), "batch_size": 1,
            "device": device.type, "points": points}


def thread_check(model: nn.Module, x: torch.Tensor, counts: tuple[int, ...], warmup: int,
                 rounds: int) -> dict[str, Any]:
    """The same forward at several ``torch.set_num_threads`` values, round-robin (restores the setting).

    On a shared machine more threads than free cores can be much slower (OpenMP threads wait at
    barriers for descheduled peers); this records whether the chosen thread count was sane.
    """
    previous = torch.get_num_threads()
    fwd = make_steps(model, x)["fwd"]

    def at(n: int) -> Callable[[], None]:
        def step() -> None:
            torch.set_num_threads(n)
            fwd()
        return step

    try:
        times = time_steps({n: at(n) for n in counts}, warmup, rounds)
    finally:
        torch.set_num_threads(previous)
    return {"batch_size": x.shape[0], "model": BASELINE,
            "median_ms": {str(n): round(statistics.median(t) * 1e3, 3) for n, t in times.items()}}


def cuda_section(forms: dict[str, dict[str, Any]], size: int, batch: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Latency (batch 1) and throughput (``batch``) of every form on the current CUDA device, float32."""
    device = torch.device("cuda", torch.cuda.current_device())
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        on_gpu = {k: {**f, "model": copy.deepcopy(f["model"]).to(device)} for k, f in forms.items()}
        out = {"device": torch.cuda.get_device_name(device), "precision": "float32",
               "float32_matmul_precision": torch.get_float32_matmul_precision(),
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": True}
        for label, b in (("latency", 1), ("throughput", batch)):
            x = torch.randn(b, 3, size, size, device=device)
            out[label] = time_forms(on_gpu, x, warmup, rounds, sync=torch.cuda.synchronize)
        return out
    finally:
        torch.backends.cudnn.benchmark = previous
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- a run
def run(*, family: str = "deit", quick: bool = False, threads: int | None = None, rounds: int = 20,
        warmup: int = 3, batch_size: int = 8, cuda: bool = True, cuda_rounds: int = 50, cuda_warmup: int = 10,
        cuda_batch: int = 64, command: str = "", seed: int = 0) -> dict[str, Any]:
    """The ``latency.json`` document (see the module docstring)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if rounds < 1 or warmup < 0 or batch_size < 1 or cuda_rounds < 1 or cuda_batch < 1:
        raise ValueError("rounds and batch sizes must be >= 1, warm-up steps >= 0")
    if threads:
        torch.set_num_threads(threads)
    doc: dict[str, Any] = {"schema": SCHEMA, **provenance(), "command": command, "machine": machine()}
    started = time.perf_counter()
    mode = "quick" if quick else "full"
    size = input_size(family, quick)
    forms = build_forms(family, quick, seed)
    torch.manual_seed(seed)
    x = torch.randn(batch_size, 3, size, size)
    doc["settings"] = {"family": family, "quick": quick, "img_size": size, "batch_size": batch_size,
                       "rounds": rounds, "warmup": warmup, "threads": torch.get_num_threads(), "baseline": BASELINE,
                       "step": "eval mode, torch.no_grad(), forward only (lightning_modules.profiling.make_steps)"}
    doc["merge_max_abs_diff"] = merge_difference(forms, x[:2])
    counts = tuple(sorted({1, torch.get_num_threads(), doc["machine"]["cpu_usable"] or 1}))
    doc["thread_check"] = thread_check(forms[BASELINE]["model"], x[:1], counts, warmup, max(3, rounds // 4))
    doc["models"] = [{"key": k, "label": f["label"], "constructor": f["constructor"], "merged": f["merged"],
                      "params": f["params"]} for k, f in forms.items()]
    print(f"timing {len(forms)} forms on the CPU ({rounds} rounds, batch {batch_size}) ...", file=sys.stderr)
    doc["cpu"] = time_forms(forms, x, warmup, rounds)
    sweep_rounds = max(3, rounds // 2) if not quick else rounds
    min_seconds = 0.0 if quick else SWEEP_MIN_SECONDS
    doc["settings"]["sweep_rounds_min"], doc["settings"]["sweep_min_seconds"] = sweep_rounds, min_seconds
    cpu = torch.device("cpu")
    doc["layer_sweep"] = {"cpu": layer_sweep(GRIDS[mode], warmup, sweep_rounds, cpu, min_seconds=min_seconds)}
    doc["model_sweep"] = {"cpu": model_sweep(IMAGE_SIZES[mode], warmup, sweep_rounds, quick, cpu,
                                             min_seconds=min_seconds)}
    doc["cuda"] = None
    if cuda and torch.cuda.is_available():
        doc["cuda"] = cuda_section(forms, size, cuda_batch, cuda_warmup, cuda_rounds)
        gpu = torch.device("cuda", torch.cuda.current_device())
        sync = torch.cuda.synchronize
        doc["layer_sweep"]["cuda"] = layer_sweep(GRIDS[mode], cuda_warmup, cuda_rounds, gpu, sync)
        doc["model_sweep"]["cuda"] = model_sweep(IMAGE_SIZES[mode], cuda_warmup, cuda_rounds, quick, gpu, sync)
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    doc["load_avg_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return doc


# ------------------------------------------------------------------------------------------- outputs
def _ms(t: dict[str, Any]) -> str:
    return f"{t['median_ms']:.2f}"


def _thread_lines(check: dict[str, Any] | None, threads: int) -> list[str]:
    if not check:
        return []
    medians = {int(n): ms for n, ms in check["median_ms"].items()}
    text = ", ".join(f"{n} thread{'s' if n > 1 else ''} {ms:.2f} ms" for n, ms in sorted(medians.items()))
    fastest = min(medians, key=medians.get)
    if fastest == threads:
        verdict = f"the run's {threads} was the fastest"
    elif fastest < threads:
        verdict = (f"{fastest} ran fastest: with more threads than free cores the OpenMP threads wait for each "
                   "other, so this run's absolute times are inflated")
    else:
        verdict = f"{fastest} ran fastest: this run used fewer threads than the machine had free"
    return [f"Thread check (baseline, batch {check['batch_size']}, round-robin): {text}; {verdict}.", ""]


def render_markdown(doc: dict[str, Any]) -> str:
    """``latency.md`` from the document alone."""
    s, m = doc["settings"], doc["machine"]
    labels = {row["key"]: row["label"] for row in doc["models"]}
    lines = [
        f"# SLAB latency: {s['family'].upper()} forms{' (quick mode)' if s['quick'] else ''}",
        "",
        f"Written by `{doc['command'] or 'reproduce/benchmark_slab_latency.py'}` on {doc['created']} at commit "
        f"`{doc['commit']}` (dirty: {doc['dirty']}); {doc['elapsed_s']} s. Plot: `latency.png`.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_usable']} usable cores, {s['threads']} torch threads; load average "
        f"(1 min) {m['load_avg_1m']} at the start, {doc['load_avg_end'][0] if doc['load_avg_end'] else 'n/a'} at "
        "the end. **The machine is shared** with other jobs: absolute CPU times are only comparable within this "
        "run; the claim on the CPU is the ratios, from steps timed round-robin (every model once per round).",
        "",
        f"Step: {s['step']}; {s['img_size']}² input, batch {s['batch_size']}, {s['warmup']} warm-up and "
        f"{s['rounds']} timed rounds. Ratios are throughput relative to `{s['baseline']}` (> 1: faster): of the "
        "medians, the median of the per-round ratios (paired steps seconds apart) with its range, and of the "
        "minimums (best round, the unloaded-machine estimate).",
        "",
        f"Merged vs unmerged SLAB output: max |difference| = {doc['merge_max_abs_diff']:.2e} (eval).",
        "",
        *_thread_lines(doc.get("thread_check"), s["threads"]),
        "## CPU",
        "",
        "| model | constructor | params | median ms | img/s | ratio of medians | per-round ratio (range) "
        "| ratio of minimums |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cpu = doc["cpu"]
    for row in doc["models"]:
        t, r = cpu["timings"][row["key"]], cpu["ratios"][row["key"]]
        lines.append(f"| {row['label']} | `{row['constructor']}` | {row['params']:,} | {_ms(t)} | "
                     f"{t['img_per_s']:.1f} | {r['ratio_of_medians']:.2f}× | {r['median_of_paired_ratios']:.2f}× "
                     f"({r['paired_ratio_min']:.2f}–{r['paired_ratio_max']:.2f}) | {r['ratio_of_minimums']:.2f}× |")
    cuda = doc.get("cuda")
    lines += ["", "## GPU", ""]
    if not cuda:
        lines.append("No CUDA device in this run: GPU latency not measured.")
    else:
        lines += [f"{cuda['device']}, {cuda['precision']} (matmul precision {cuda['float32_matmul_precision']}, "
                  f"cuDNN TF32 {cuda['cudnn_allow_tf32']}), synchronised around each step.", "",
                  "| model | latency ms (batch 1) | latency ratio | img/s (batch "
                  f"{cuda['throughput']['batch_size']}) | throughput ratio |", "|---|---:|---:|---:|---:|"]
        for row in doc["models"]:
            lat, thr = cuda["latency"], cuda["throughput"]
            k = row["key"]
            lines.append(f"| {row['label']} | {_ms(lat['timings'][k])} | "
                         f"{lat['ratios'][k]['median_of_paired_ratios']:.2f}× | "
                         f"{thr['timings'][k]['img_per_s']:.1f} | {thr['ratios'][k]['median_of_paired_ratios']:.2f}× |")
    for device, sweep in doc["layer_sweep"].items():
        lines += ["", f"## Attention layer alone over N tokens ({device})", "",
                  f"Width {sweep['dim']}, {sweep['heads']} heads, batch 1. Softmax: {sweep['softmax']}; SLA: "
                  f"{sweep['sla']}. Ratio: SLA throughput / softmax throughput (median of per-round ratios).", "",
                  "| grid | N | rounds | softmax ms | SLA ms | SLA / softmax speed |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for p in sweep["points"]:
            lines.append(f"| {p['grid']}×{p['grid']} | {p['tokens']:,} | {p.get('rounds', '')} | "
                         f"{_ms(p['timings']['softmax'])} | {_ms(p['timings']['sla'])} | "
                         f"{p['ratios']['sla']['median_of_paired_ratios']:.2f}× |")
    for device, sweep in doc["model_sweep"].items():
        lines += ["", f"## {sweep['network']} over image sizes ({device})", "",
                  f"{labels.get('ln_softmax', 'baseline')} against {labels.get('slab_merged', 'SLAB merged')}, "
                  "batch 1; N = (size/16)² patch tokens.", "",
                  "| image | N | rounds | baseline ms | SLAB merged ms | SLAB / baseline speed |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for p in sweep["points"]:
            lines.append(f"| {p['img_size']}² | {p['tokens']:,} | {p.get('rounds', '')} | "
                         f"{_ms(p['timings']['ln_softmax'])} | "
                         f"{_ms(p['timings']['slab_merged'])} | "
                         f"{p['ratios']['slab_merged']['median_of_paired_ratios']:.2f}× |")
    lines += ["", "The paper's latency protocol (hardware, batch) is unknown (shared/papers/slab.md §4); these are "
              "our own ratios, measured in one run.", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Three panels: CPU throughput ratios, the attention-layer sweep, the image-size sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    rows = doc["models"]
    values = [doc["cpu"]["ratios"][r["key"]]["median_of_paired_ratios"] for r in rows]
    ax = axes[0]
    ax.barh(range(len(rows)), values, color=["0.6"] + ["tab:blue"] * (len(rows) - 1))
    ax.set_yticks(range(len(rows)), [r["label"].split(" (")[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}×", va="center", fontsize=8)
    ax.set_xlabel(f"CPU throughput / baseline, median of per-round ratios ({doc['settings']['threads']} threads)")
    ax.set_title(f"{doc['settings']['family'].upper()} forms, batch {doc['settings']['batch_size']}")
    for ax, (title, sweep, keys, x_key) in zip(axes[1:], (
            ("attention layer alone", doc["layer_sweep"]["cpu"], ("softmax", "sla"), "tokens"),
            ("whole network", doc["model_sweep"]["cpu"], ("ln_softmax", "slab_merged"), "tokens")), strict=True):
        xs = [p[x_key] for p in sweep["points"]]
        for key, style in zip(keys, ("o-", "s-"), strict=True):
            ax.plot(xs, [p["timings"][key]["median_ms"] for p in sweep["points"]], style,
                    label={"softmax": "softmax attention", "sla": "SLA (linear)", "ln_softmax": "LN + softmax",
                           "slab_merged": "SLAB merged"}[key])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel("median ms per forward (batch 1, CPU)")
        ax.set_title(f"{title}, " + (f"width {sweep['dim']}" if "dim" in sweep else sweep["network"]))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"SLAB latency, commit {doc['commit']}, load avg {doc['machine']['load_avg_1m']} (shared CPU)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    """``latency.json``, ``latency.md`` (from the JSON) and ``latency.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / "latency.json", out_dir / "latency.md", out_dir / "latency.png"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(doc), encoding="utf-8")
    plot(doc, png_path)
    return json_path, md_path, png_path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="deit", help="network (default DeiT-T)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 3; quick 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="CPU batch of the forms (default 8; quick 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (2-block DeiT at 64², small sweeps)")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even if a GPU is present")
    parser.add_argument("--cuda-rounds", type=int, default=50)
    parser.add_argument("--cuda-batch", type=int, default=64, help="CUDA throughput batch (latency: batch 1)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "slab")
    parser.add_argument("--render-only", action="store_true", help="rewrite latency.md/.png from latency.json")
    args = parser.parse_args(argv)
    if args.render_only:
        doc = json.loads((args.out_dir / "latency.json").read_text(encoding="utf-8"))
        (args.out_dir / "latency.md").write_text(render_markdown(doc), encoding="utf-8")
        plot(doc, args.out_dir / "latency.png")
        print(f"rendered {args.out_dir / 'latency.md'} and latency.png")
        return 0
    quick = args.quick
    try:
        doc = run(family=args.family, quick=quick, threads=args.threads,
                  rounds=args.rounds or (3 if quick else 20), warmup=args.warmup if args.warmup is not None else (
                      1 if quick else 3), batch_size=args.batch_size or (2 if quick else 8), cuda=not args.no_cuda,
                  cuda_rounds=args.cuda_rounds, cuda_batch=args.cuda_batch,
                  command=shlex.join(["python", "reproduce/benchmark_slab_latency.py", *argv]))
    except ValueError as err:
        parser.error(str(err))
    paths = write(doc, args.out_dir)
    print(f"wrote {', '.join(str(p) for p in paths)} ({doc['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
