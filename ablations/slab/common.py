"""What SLAB's decay-schedule tables share: the norm rows, the γ schedules and the γ-curve figure.

Rows (every one on the same host, attention and recipe; only the norms change):

* ``ln``, ``bn``, ``repbn``: LayerNorm, plain BatchNorm (statistics over batch × tokens) and RepBN
  from the first step, no progression;
* ``prepbn_linear``: PRepBN with the release's linear γ decay (the released method);
* ``prepbn_cosine``, ``prepbn_step``: the same T with the project's cosine and 4-step decays
  (models/layers/repbn.py; the official code has only the linear schedule, spec §5).

Each host's table says how a row is built (:func:`decay_variants`); T stays the recipe's in
each mode (the quick layer's T in ``--quick``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ablations.framework.provenance import REPO_ROOT
from ablations.framework.table import Variant

SCHEDULES = ("linear", "cosine", "step")
NORM_ROWS = {"ln": "LayerNorm throughout (no BN)", "bn": "BatchNorm over batch × tokens throughout",
             "repbn": "RepBN (BN + η·x) from the first step, no progression"}
SCHEDULE_TEXT = {"linear": "linear γ decay (the release's)",
                 "cosine": "cosine γ decay, γ = ½(1 + cos(π·s/T)) (project-defined)",
                 "step": "4-step γ decay, γ = 1 − ⌊4s/T⌋/4 (project-defined)"}
GAMMA_COLUMN = "train/repbn_gamma"


def _net_init_args(config_file: str) -> dict[str, Any]:
    config = yaml.safe_load((REPO_ROOT / config_file).read_text()) or {}
    return ((config.get("model") or {}).get("init_args", {}).get("net") or {}).get("init_args") or {}


def norm_kwargs_of(*config_files: str) -> dict[str, Any]:
    """The net's ``norm_kwargs`` after layering ``config_files`` (a later file's dict replaces)."""
    found: dict[str, Any] = {}
    for config_file in config_files:
        found = _net_init_args(config_file).get("norm_kwargs", found)
    if not found:
        raise ValueError(f"none of {config_files} sets model.init_args.net.init_args.norm_kwargs")
    return dict(found)


def decay_variants(norm_row: Callable[[str], dict[str, Any]], schedule_row: Callable[[str, bool], dict[str, Any]],
                   T: tuple[int, int], paper: Mapping[str, Mapping[str, float | None]],
                   common: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
                   norm_rows: tuple[str, ...] = tuple(NORM_ROWS)) -> tuple[Variant, ...]:
    """The rows of a host: ``norm_rows`` (all three by default), then the three schedules.

    ``norm_row(name)`` gives the overrides of the ``ln`` / ``bn`` / ``repbn`` rows,
    ``schedule_row(schedule, quick)`` those of a PRepBN row (the recipe's or the quick layer's T);
    ``T`` is (recipe, quick) for the descriptions, ``paper`` the paper's values per row name and
    ``common`` (overrides, quick overrides) what every row adds.
    """
    full, quick = common
    rows = [Variant(name, {**full, **norm_row(name)}, text, dict(paper.get(name, {})),
                    quick_overrides=dict(quick)) for name, text in NORM_ROWS.items() if name in norm_rows]
    for schedule in SCHEDULES:
        name = f"prepbn_{schedule}"
        rows.append(Variant(
            name, {**full, **schedule_row(schedule, False)},
            f"PRepBN, {SCHEDULE_TEXT[schedule]}, T = {T[0]:,} steps (quick: {T[1]:,})",
            dict(paper.get(name, {})), quick_overrides={**quick, **schedule_row(schedule, True)}))
    return tuple(rows)


def gamma_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """``(steps, γ)`` logged by ProgressiveNormSchedule in a run's CSV log (empty without PRepBN)."""
    import csv

    steps: list[int] = []
    gammas: list[float] = []
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return steps, gammas
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get(GAMMA_COLUMN)
            if value not in (None, ""):
                steps.append(int(row["step"]))
                gammas.append(float(value))
    return steps, gammas


def plot_gamma_curves(results: Mapping[str, Any], png_path: str | Path) -> None:
    """Beside the table: γ against the training step of every PRepBN row (its first seed's log),
    with each row's primary metric (mean ± std over seeds) in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ablations.framework.render import format_value
    from ablations.framework.table import table_label

    metric = results["metrics"][0]
    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for variant in results["variants"]:
        runs = [r for r in variant["runs"] if r.get("run_dir")]
        if not runs:
            continue
        steps, gammas = gamma_curve(REPO_ROOT / runs[0]["run_dir"])
        if not steps:
            continue
        stats = variant.get("mean", {}).get(metric["name"]), variant.get("std", {}).get(metric["name"])
        score = format_value(stats[0], metric.get("decimals", 2))
        spread = f" ± {format_value(stats[1], metric.get('decimals', 2))}" if stats[1] is not None else ""
        ax.plot(steps, gammas, label=f"{variant['name']}: {metric['label']} {score}{spread}")
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, f"no {GAMMA_COLUMN} in the runs' metrics.csv", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("γ (weight of LayerNorm)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    kind = "SYNTHETIC data" if results.get("data_kind") == "synthetic" else "real data"
    quick = ", quick" if results.get("quick") else ""
    ax.set_title(f"{results['paper']} {table_label(results['table'], results['subject'])}: γ schedules "
                 f"({kind}{quick})", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(png_path), dpi=120)
