"""A toy table of a second task kind: hidden width of the toy classifier."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ablations.framework.table import GMACS, PARAMS, AblationTable, Metric, Variant

TOP1 = Metric("test/top1", "Top-1 (%)", True)
NET = "model.init_args.net.init_args."

TABLE = AblationTable(
    paper="toy", number=1, subject="width", title="Hidden width", dataset="blobs",
    recipe="tests/toy_task/configs/recipe.yaml", quick_recipe="tests/toy_task/configs/quick.yaml",
    synthetic_data="tests/toy_task/configs/synthetic.yaml",
    metrics=(TOP1, PARAMS, GMACS),
    variants=(Variant("w4", {NET + "hidden": 4}, "4 hidden units", {"test/top1": None}),
              Variant("w16", {NET + "hidden": 16}, "16 hidden units", {"test/top1": 90.0})),
    paper_source="made up for the test: not a paper",
    seeds=(3,),
    script="table1_toy_width",
)


def plot_runs(results, png_path: Path) -> None:
    """An extra figure of the toy table: one point per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    for i, variant in enumerate(results["variants"]):
        ax.plot([i] * len(variant["runs"]), [r["metrics"]["test/top1"] for r in variant["runs"]], "o")
    FigureCanvasAgg(fig).print_png(str(png_path))


#: The same table tested with the best (lowest val/loss) and the last weights, with an extra figure.
BEST_AND_LAST = dataclasses.replace(
    TABLE, number=2, subject="width_best", script="table2_toy_width_best",
    test_checkpoints=("best", "last"), plots={"runs": "tests.toy_task.table:plot_runs"},
    metrics=(TOP1, Metric("last/test/top1", "Top-1, last (%)", True)),
    variants=tuple(dataclasses.replace(v, paper={}) for v in TABLE.variants),
    overrides={"trainer.callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                      "init_args": {"monitor": "val/loss", "mode": "min", "save_top_k": 1,
                                                    "save_last": True}}]},
)
