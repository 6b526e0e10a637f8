"""Attention collapse, measured per layer: how alike the attention rows of one layer are.

ConvFormer's argument is that transformers trained on little data *collapse*: the
attention rows (one per query token) become alike, so every token aggregates the
same mixture, increasingly so in deep layers. The measure here is the mean pairwise
cosine similarity of the rows of each attention map::

    collapse(A) = mean over b, heads of  (1 / (N (N − 1))) · Σ_{i ≠ j} cos(A_i·, A_j·)

for ``A`` of shape ``(B, heads, N_query, N_key)``: 1 when every row is the same
distribution, near 0 for unrelated rows. With unit rows ``r_i`` the pair sum is
``‖Σ_i r_i‖² − Σ_i ‖r_i‖²``, so it costs O(N·N_key) instead of O(N²·N_key). An
all-zero row counts as orthogonal to every other row.

Any network works whose attention modules follow the recording contract of
:mod:`models.layers.vit_variants` / :mod:`models.layers.convformer`: a boolean
attribute ``record_attention``; while it is set, ``forward`` keeps the map it applies
to the values as ``last_attention`` ``(B, heads, N_query, N_key)``.

* :func:`measure_attention_collapse` runs a few images through a net and returns
  ``{layer name: score}`` in forward order.
* :class:`AttentionCollapse` (a Lightning callback) does it after ``test`` on the
  first ``num_images`` test images, adds ``collapse/layer_NN`` to the task's
  ``test_report`` (so tables carry it), logs the scores, writes
  ``attention_collapse.{json,png}`` in the run folder and sends the plot to W&B.
* :func:`plot_collapse` draws layers on the x axis, one line per series (attention
  type or table variant); :func:`plot_table_collapse` is the ablation tables' figure.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from models.layers.attention_recording import recording_modules

__all__ = [
    "collapse_score",
    "attention_layers",
    "measure_attention_collapse",
    "plot_collapse",
    "plot_table_collapse",
    "table_collapse_series",
    "AttentionCollapse",
    "METRIC_PREFIX",
]

#: Key prefix of the per-layer scores in a test report: ``collapse/layer_00`` ...
METRIC_PREFIX = "collapse/layer_"


def collapse_score(attention: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of attention rows: ``(B, heads, N, N_key)`` → scalar (float64)."""
    if attention.ndim != 4:
        raise ValueError(f"attention must be (B, heads, N_query, N_key), got shape {tuple(attention.shape)}")
    n = attention.shape[-2]
    if n < 2:
        raise ValueError("collapse needs at least two query rows")
    rows = nn.functional.normalize(attention.double(), dim=-1)
    pair_sum = rows.sum(-2).square().sum(-1) - rows.square().sum((-1, -2))  # (B, heads)
    return (pair_sum / (n * (n - 1))).mean()


def attention_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules following the recording contract, in registration (= forward) order."""
    return recording_modules(net)


@torch.no_grad()
def measure_attention_collapse(net: nn.Module, images: torch.Tensor, batch_size: int = 2) -> dict[str, float]:
    """``{layer name: collapse score}`` over ``images`` ``(N, C, H, W)``, in eval mode.

    The scores of the batches are averaged weighted by batch size. The net's mode and
    recording flags are restored afterwards.
    """
    layers = attention_layers(net)
    if not layers:
        raise ValueError(f"{type(net).__name__} has no attention module with a `record_attention` flag")
    was_training = net.training
    flags = [m.record_attention for _, m in layers]
    totals = {name: 0.0 for name, _ in layers}
    device = next(net.parameters()).device
    try:
        net.eval()
        for _, m in layers:
            m.record_attention = True
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            net(batch)
            for name, m in layers:
                totals[name] += float(collapse_score(m.last_attention)) * len(batch)
    finally:
        for (_, m), flag in zip(layers, flags, strict=True):
            m.record_attention = flag
            m.last_attention = None
        net.train(was_training)
    return {name: total / len(images) for name, total in totals.items()}


def as_metrics(scores: Mapping[str, float]) -> dict[str, float]:
    """``{layer name: score}`` → ``{"collapse/layer_00": score, ...}`` in order."""
    return {f"{METRIC_PREFIX}{i:02d}": float(v) for i, v in enumerate(scores.values())}


def plot_collapse(series: Mapping[str, Sequence[float | None]], title: str):
    """Layers on the x axis (1-based), one line per series; returns a matplotlib Figure (Agg, no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), [float("nan") if v is None else v for v in values],
                marker="o", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean pairwise cosine similarity of attention rows")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))


def table_collapse_series(results: Mapping[str, Any]) -> dict[str, list[float]]:
    """``{variant: [mean over seeds of collapse/layer_NN for each layer]}`` of a results dict.

    Reads the runs' ``collapse/layer_NN`` metrics (written by :class:`AttentionCollapse`);
    a variant without them is left out.
    """
    series: dict[str, list[float]] = {}
    for variant in results["variants"]:
        runs = [r["metrics"] for r in variant.get("runs", [])]
        keys = sorted({k for m in runs for k in m if k.startswith(METRIC_PREFIX)})
        if runs and keys:
            series[variant["name"]] = [sum(m[k] for m in runs if k in m) / sum(k in m for m in runs) for k in keys]
    return series


def plot_table_collapse(results: Mapping[str, Any], png_path: str | Path) -> None:
    """An ablation table's figure: layers on the x axis, one line per variant (:func:`table_collapse_series`)."""
    from ablations.framework.table import table_label

    series = table_collapse_series(results)
    kind = "SYNTHETIC data" if results.get("data_kind") == "synthetic" else "real data"
    label = table_label(results["table"], results.get("subject", ""))
    title = (f"{results['paper']} {label}: attention collapse per layer\n"
             f"({kind}, mean of {len(results.get('seeds', []))} seed(s))")
    _save(plot_collapse(series, title), Path(png_path))


class AttentionCollapse(L.Callback):
    """After ``test``: the collapse score of every attention layer on the first ``num_images`` test images.

    Adds ``collapse/layer_NN`` to ``pl_module.test_report.metrics`` (when the task sets
    one), logs them to every logger, and on rank 0 writes ``attention_collapse.json`` and
    ``attention_collapse.png`` in the run folder (the PNG also goes to W&B). Every rank
    measures the same images (the data set's first items, not its shard), so the numbers
    do not depend on the number of processes.
    """

    def __init__(self, num_images: int = 4, batch_size: int = 2) -> None:
        self.num_images = num_images
        self.batch_size = batch_size

    def _images(self, trainer: L.Trainer) -> torch.Tensor:
        loader = trainer.datamodule.test_dataloader()
        dataset = loader.dataset
        count = min(self.num_images, len(dataset))
        images = [torch.as_tensor(dataset[i]["image"]) for i in range(count)]
        return torch.stack(images)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning_modules.callbacks import log_figure, run_dir

        net = getattr(pl_module, "net", pl_module)
        images = self._images(trainer)
        scores = measure_attention_collapse(net, images, self.batch_size)
        metrics = as_metrics(scores)
        report = getattr(pl_module, "test_report", None)
        if report is not None:
            report.metrics.update(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        folder = run_dir(trainer)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "attention_collapse.json").write_text(json.dumps(scores, indent=2) + "\n")
            name = type(net).__name__
            attention = getattr(net, "attention", None)
            label = f"{name} ({attention})" if attention else name
            fig = plot_collapse({label: list(scores.values())},
                                f"attention collapse per layer\n({len(images)} test image(s))")
            log_figure(trainer, fig, "test/attention_collapse", folder / "attention_collapse.png", label)
