"""AblationTable naming: numbered paper tables and tables the paper's sources do not number."""
from __future__ import annotations

from pathlib import Path

from ablations.framework.render import render_markdown
from ablations.framework.results import finalize_results
from ablations.framework.table import AblationTable, Metric, Variant, table_label

ACC = Metric("test/top1", "Top-1 (%)", True)


def _table(number: int | None, subject: str = "repbn_decay") -> AblationTable:
    return AblationTable(paper="slab", number=number, subject=subject, title="γ decay", dataset="imagenet",
                         recipe="r.yaml", quick_recipe="q.yaml", synthetic_data="s.yaml", metrics=(ACC,),
                         variants=(Variant("linear", {}),), paper_source="unknown")


def test_numbered_table_names():
    table = _table(5, "upsampling")
    assert (table.key, table.label, table.tag, table.group) == ("table5_upsampling", "Table 5", "table5",
                                                                "slab-table5")
    assert table.command == "python reproduce/table5_upsampling.py"


def test_unnumbered_table_names():
    table = _table(None)
    assert table.key == "table_repbn_decay"
    assert table.command == "python reproduce/table_repbn_decay.py"
    assert table.label == "repbn decay table" == table_label(None, "repbn_decay")
    assert table.group == "slab-table_repbn_decay"
    assert table.results_file(Path("results"), data_kind="synthetic", quick=True) == \
        Path("results/slab/table_repbn_decay.quick-synthetic.json")


def test_unnumbered_table_renders():
    results = {"schema": 1, "paper": "slab", "table": None, "subject": "repbn_decay", "title": "γ decay",
               "dataset": "imagenet", "data_kind": "synthetic", "quick": True, "recipe": "r.yaml", "overrides": {},
               "commit": "abc", "created": "2026-12-01T00:00:00Z", "seeds": [0], "paper_source": "unknown",
               "metrics": [ACC.as_dict()],
               "variants": [{"name": "linear", "description": "", "overrides": {}, "paper": {"test/top1": None},
                             "runs": [{"seed": 0, "metrics": {"test/top1": 50.0}, "run_dir": None,
                                       "wandb_run": None}]}]}
    text = render_markdown(finalize_results(results))
    assert text.splitlines()[0] == "# slab — repbn decay table: γ decay"
    assert "Table None" not in text
