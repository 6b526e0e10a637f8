"""Every paper table in the repository, found by looking, not by a hand-kept list.

A table is the ``TABLE`` (an :class:`~ablations.framework.table.AblationTable`) of a
module ``ablations/<paper>/table*.py``; its command is ``python reproduce/<script>.py``.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ablations.framework.provenance import REPO_ROOT
from ablations.framework.table import AblationTable

__all__ = ["all_tables", "table_modules"]

ABLATIONS = REPO_ROOT / "ablations"


def table_modules() -> list[str]:
    """``ablations.<paper>.table*`` module names, sorted."""
    names = []
    for paper in sorted(p for p in ABLATIONS.iterdir() if (p / "__init__.py").is_file() and p.name != "framework"):
        for info in pkgutil.iter_modules([str(paper)]):
            if info.name.startswith("table"):
                names.append(f"ablations.{paper.name}.{info.name}")
    return sorted(names)


def all_tables() -> list[AblationTable]:
    """Every declared table, ordered by paper then table number.

    Raises ``ValueError`` when two tables share an entry script or a results file
    (a later paper's Table 5 must name itself: ``script="table5_<paper>_<subject>"``).
    """
    tables = []
    for name in table_modules():
        table = getattr(importlib.import_module(name), "TABLE", None)
        if not isinstance(table, AblationTable):
            raise TypeError(f"{name} defines no TABLE (an AblationTable)")
        tables.append(table)
    for what, key in (("entry script", lambda t: t.command), ("results file", lambda t: (t.paper, t.key))):
        seen: dict = {}
        for table in tables:
            other = seen.setdefault(key(table), table)
            if other is not table:
                raise ValueError(f"{other.paper} {other.label} and {table.paper} {table.label} "
                                 f"share the {what} {key(table)}; give the later one its own script= name")
    return sorted(tables, key=lambda t: (t.paper, t.number is None, t.number or 0, t.subject))


def entry_script(table: AblationTable) -> Path:
    """The file behind :attr:`AblationTable.command`."""
    return REPO_ROOT / table.command.removeprefix("python ")
