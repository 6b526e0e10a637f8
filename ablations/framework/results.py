"""Ablation-table results: the JSON schema, aggregation, and writing JSON + Markdown + PNG.

A finished table is one JSON file ``results/<paper>/table<N>_<subject>.json``
written by code (:func:`ablations.framework.publish.write_results`); the Markdown
next to it is rendered from the JSON only (:mod:`ablations.framework.render`) and
CI checks that every committed JSON re-renders to exactly its ``.md``; the PNG bar
chart is drawn from the same JSON (:mod:`ablations.framework.plots`). No number is
typed by hand. This module imports neither of them (no import circles:
``publish`` → ``render``/``plots`` → ``results``).

Schema (version 1)::

    {
      "schema": 1,
      "paper": "cswin_unet", "table": 5, "subject": "upsampling",
      "title": "Upsampling strategy",
      "dataset": "synapse", "data_kind": "synthetic" | "real", "quick": true,
      "recipe": "reproduce/configs/cswin_unet/synapse.yaml",
      "overrides": {<dotted config key>: <value>, ...},   # common to every variant
      "commit": "abc1234", "created": "2026-11-22T10:00:00Z", "seeds": [1234],
      "environment": {"python": "3.11.7", "torch": "2.14.1", ...},   # optional: provenance.library_versions()
      "machine": {"cpu": "AMD EPYC", "cpu_features": [...], ...},    # optional: provenance.hardware()
      "paper_source": "where the paper's numbers come from",
      "metrics": [
        {"name": "test/mean_dice", "label": "DSC (%)", "higher_is_better": true},
        {"name": "test/mean_hd95", "label": "HD95", "higher_is_better": false,
         "decimals": 2}                                 # optional, default 2
      ],
      "variants": [
        {"name": "carafe", "description": "...",
         "overrides": {"model.init_args.net.init_args.upsampler": "carafe"},
         "runs": [{"seed": 1234, "metrics": {"test/mean_dice": 71.2, ...},
                   "run_dir": "runs/...", "wandb_run": "... or null"}],
         "mean": {<metric>: float | null}, "std": {...},
         "paper": {<metric>: float | null}, "delta": {<metric>: ours - paper | null},
         "n_runs": {<metric>: number of runs that reported it}}
      ],
      "notes": ["..."]
    }

``mean``, ``std``, ``delta`` and ``n_runs`` are always recomputed from ``runs``
and ``paper`` by :func:`finalize_results` (called by :func:`write_results`), so
they cannot drift from the runs. Runs may carry extra metrics (per-class Dice,
parameter counts ...); only the metrics listed in ``metrics`` are aggregated and
tabulated. ``null`` in ``paper`` means the paper's value is unknown; it is never
filled in by hand.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "DATA_KINDS",
    "aggregate_runs",
    "compute_delta",
    "validate_results",
    "finalize_results",
    "results_paths",
    "dumps_results",
    "load_results",
]

SCHEMA_VERSION = 1
DATA_KINDS = ("synthetic", "real")
_REQUIRED_TOP = (
    "schema", "paper", "table", "subject", "title", "dataset", "data_kind", "quick",
    "recipe", "commit", "created", "seeds", "paper_source", "metrics", "variants",
)


# --------------------------------------------------------------------------- #
# aggregation
# --------------------------------------------------------------------------- #
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def aggregate_runs(
    runs: Sequence[Mapping[str, Any]], metric_names: Sequence[str]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Mean and standard deviation of each metric over runs (seeds).

    Args:
        runs: run records, each with a ``"metrics"`` mapping ``{name: value}``.
        metric_names: metrics to aggregate.

    Returns ``(mean, std)``, dicts keyed by metric name. A run whose value is
    missing or ``None`` does not count for that metric. ``std`` is the **sample**
    standard deviation (``ddof=1``) when at least two runs report the metric and
    ``0.0`` for a single run; both are ``None`` when no run reports it.
    Non-finite values raise ``ValueError`` (sanitise them first).
    """
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for name in metric_names:
        values = []
        for i, run in enumerate(runs):
            value = run.get("metrics", {}).get(name)
            if value is None:
                continue
            if not _is_number(value) or not math.isfinite(float(value)):
                raise ValueError(f"run {i}: metric {name!r} must be a finite number or None, got {value!r}")
            values.append(float(value))
        if not values:
            mean[name], std[name] = None, None
        elif len(values) == 1:
            mean[name], std[name] = values[0], 0.0
        else:
            arr = np.asarray(values, dtype=np.float64)
            mean[name], std[name] = float(arr.mean()), float(arr.std(ddof=1))
    return mean, std


def compute_delta(
    mean: Mapping[str, float | None], paper: Mapping[str, float | None]
) -> dict[str, float | None]:
    """``ours - paper`` per metric of ``mean``; ``None`` where either value is unknown."""
    delta: dict[str, float | None] = {}
    for name, ours in mean.items():
        ref = paper.get(name)
        delta[name] = None if ours is None or ref is None else float(ours) - float(ref)
    return delta


# --------------------------------------------------------------------------- #
# validation / normalisation
# --------------------------------------------------------------------------- #
def _jsonable(obj: Any, path: str, replaced: list[str]) -> Any:
    """Plain-JSON copy: numpy scalars/arrays → Python, tuples → lists, Paths → str,
    non-finite floats → None (their locations are appended to ``replaced``)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{path}.{k}" if path else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), path, replaced)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            replaced.append(path)
            return None
        return value
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"{path}: value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` listing every way ``results`` departs from the schema."""
    problems: list[str] = []
    for key in _REQUIRED_TOP:
        if key not in results:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        raise ValueError("invalid results: " + "; ".join(problems))
    if results["schema"] != SCHEMA_VERSION:
        problems.append(f"schema must be {SCHEMA_VERSION}, got {results['schema']!r}")
    if results["data_kind"] not in DATA_KINDS:
        problems.append(f"data_kind must be one of {DATA_KINDS}, got {results['data_kind']!r}")
    if not isinstance(results["quick"], bool):
        problems.append(f"quick must be true/false, got {results['quick']!r}")
    if not isinstance(results["seeds"], (list, tuple)):
        problems.append("seeds must be a list")
    if not isinstance(results.get("overrides", {}), Mapping):
        problems.append("overrides must be a mapping")
    notes = results.get("notes", [])
    if not isinstance(notes, (list, tuple)) or not all(isinstance(n, str) for n in notes):
        problems.append("notes must be a list of strings")

    metric_names: list[str] = []
    metrics = results["metrics"]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        problems.append("metrics must be a non-empty list")
        metrics = []
    for i, m in enumerate(metrics):
        if not isinstance(m, Mapping) or not {"name", "label", "higher_is_better"} <= set(m):
            problems.append(f"metrics[{i}] needs name, label and higher_is_better")
            continue
        if not isinstance(m["higher_is_better"], bool):
            problems.append(f"metrics[{i}].higher_is_better must be true/false")
        if "decimals" in m and (not isinstance(m["decimals"], int) or m["decimals"] < 0):
            problems.append(f"metrics[{i}].decimals must be a non-negative integer")
        metric_names.append(m["name"])
    if len(set(metric_names)) != len(metric_names):
        problems.append(f"metric names must be unique, got {metric_names}")

    variants = results["variants"]
    if not isinstance(variants, (list, tuple)) or not variants:
        problems.append("variants must be a non-empty list")
        variants = []
    names = []
    for i, v in enumerate(variants):
        where = f"variants[{i}]"
        if not isinstance(v, Mapping) or "name" not in v:
            problems.append(f"{where} needs a name")
            continue
        names.append(v["name"])
        where = f"variant {v['name']!r}"
        if not isinstance(v.get("overrides", {}), Mapping):
            problems.append(f"{where}: overrides must be a mapping")
        paper = v.get("paper", {}) or {}
        if not isinstance(paper, Mapping):
            problems.append(f"{where}: paper must be a mapping of metric -> number or null")
        else:
            for k, val in paper.items():
                if k not in metric_names:
                    problems.append(f"{where}: paper value for unknown metric {k!r} (metrics: {metric_names})")
                elif val is not None and not _is_number(val):
                    problems.append(f"{where}: paper[{k!r}] must be a number or null, got {val!r}")
        runs = v.get("runs")
        if not isinstance(runs, (list, tuple)):
            problems.append(f"{where}: runs must be a list")
            continue
        for j, run in enumerate(runs):
            if not isinstance(run, Mapping) or "seed" not in run or not isinstance(run.get("metrics"), Mapping):
                problems.append(f"{where}: runs[{j}] needs a seed and a metrics mapping")
                continue
            for k, val in run["metrics"].items():
                if val is not None and not _is_number(val):
                    problems.append(f"{where}: runs[{j}].metrics[{k!r}] must be a number or null, got {val!r}")
    if len(set(names)) != len(names):
        problems.append(f"variant names must be unique, got {names}")
    if problems:
        raise ValueError("invalid results: " + "; ".join(problems))


def finalize_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """Validated, plain-JSON copy of ``results`` with every variant's aggregates recomputed.

    Fills defaults (``overrides`` {}, ``notes`` [], per variant ``description``
    "", ``overrides`` {}, ``paper`` null for unlisted metrics), recomputes
    ``mean``/``std``/``n_runs`` from the runs (:func:`aggregate_runs`) and
    ``delta`` (:func:`compute_delta`). Non-finite floats become ``null`` and a
    note records where. The input is not modified.
    """
    replaced: list[str] = []
    out = _jsonable(copy.deepcopy(dict(results)), "", replaced)
    out.setdefault("overrides", {})
    out.setdefault("notes", [])
    for where in replaced:
        out["notes"].append(f"non-finite value replaced by null at {where}")
    validate_results(out)
    names = [m["name"] for m in out["metrics"]]
    for v in out["variants"]:
        v.setdefault("description", "")
        v.setdefault("overrides", {})
        paper = v.get("paper") or {}
        v["paper"] = {name: paper.get(name) for name in names}
        for run in v["runs"]:
            run.setdefault("run_dir", None)
            run.setdefault("wandb_run", None)
        mean, std = aggregate_runs(v["runs"], names)
        v["mean"], v["std"] = mean, std
        v["n_runs"] = {n: sum(1 for r in v["runs"] if r["metrics"].get(n) is not None) for n in names}
        v["delta"] = compute_delta(mean, v["paper"])
    return out


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #
def results_paths(json_path: str | Path) -> tuple[Path, Path, Path]:
    """``(json, md, png)`` paths of one table: same stem, same folder."""
    p = Path(json_path)
    if p.suffix != ".json":
        raise ValueError(f"results file must end in .json, got {p}")
    return p, p.with_suffix(".md"), p.with_suffix(".png")


def extra_plot_paths(json_path: str | Path, results: Mapping[str, Any]) -> dict[str, Path]:
    """``{suffix: <stem>.<suffix>.png}`` for the table's extra figures (``results["plots"]``)."""
    p = Path(json_path)
    return {suffix: p.with_name(f"{p.stem}.{suffix}.png") for suffix in results.get("plots", {})}


def dumps_results(results: Mapping[str, Any]) -> str:
    """Stable JSON text: sorted keys, 2-space indent, UTF-8, trailing newline."""
    return json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results JSON file."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    try:
        validate_results(results)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return results
