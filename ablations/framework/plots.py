"""Bar charts of an ablation table's results (see :mod:`.results` for the schema).

One panel per metric, one bar per variant (height = our mean over seeds, error
bar = standard deviation), the paper's value as a marker where it is known. The
figure title says whether the numbers come from synthetic or real data. Drawn
with the Agg canvas directly (no pyplot state, no display needed).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ablations.framework.table import table_label

__all__ = ["plot_table", "save_plot"]


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def plot_table(results: Mapping[str, Any]) -> Figure:
    """Figure with one bar-chart panel per metric of a finalised results dict."""
    metrics = list(results["metrics"])
    variants = list(results["variants"])
    names = [str(v["name"]) for v in variants]
    n_panels = len(metrics)
    width = max(4.0, 0.6 * len(variants) + 2.0)
    fig = Figure(figsize=(width * n_panels, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    x = list(range(len(variants)))
    for ax, metric in zip(axes, metrics, strict=True):
        key = metric["name"]
        means = [_value(v.get("mean", {}).get(key)) for v in variants]
        stds = [_value(v.get("std", {}).get(key)) for v in variants]
        stds = [0.0 if math.isnan(s) else s for s in stds]
        ax.bar(x, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8, label="ours (mean ± std)")
        paper_x = [i for i, v in enumerate(variants) if v.get("paper", {}).get(key) is not None]
        if paper_x:
            paper_y = [float(variants[i]["paper"][key]) for i in paper_x]
            ax.scatter(paper_x, paper_y, marker="D", color="tab:red", zorder=3, label="paper")
        for i, m in enumerate(means):
            if math.isnan(m):
                ax.annotate("not run", (i, 0), ha="center", va="bottom", fontsize=8, color="gray")
            else:
                ax.annotate(f"{m:.2f}", (i, m), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)
        arrow = "↑" if metric["higher_is_better"] else "↓"
        ax.set_title(f"{metric['label']} ({arrow} better)")
        ax.set_xticks(x)
        crowded = len(variants) > 3
        ax.set_xticklabels(names, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    kind = str(results["data_kind"]).upper()
    quick = ", quick mode" if results.get("quick") else ""
    fig.suptitle(
        f"{results['paper']} {table_label(results['table'], results['subject'])}: {results['title']} — "
        f"{kind} data{quick} ({results['dataset']})"
    )
    return fig


def save_plot(results: Mapping[str, Any], png_path: str | Path) -> Path:
    """Draw :func:`plot_table` and write it as a PNG; returns the path."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_table(results)
    fig.savefig(png_path, dpi=100, metadata={"Software": None})
    return png_path
