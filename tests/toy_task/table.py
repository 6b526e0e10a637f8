"""A toy table of a second task kind: hidden width of the toy classifier."""
from __future__ import annotations

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
