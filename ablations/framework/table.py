"""Declaring a paper table: its variants as config overrides and the paper's numbers as data.

A table script under ``ablations/<paper>/`` builds one :class:`AblationTable` and
hands it to :func:`ablations.framework.runner.main`. Overrides are dotted keys of the
LightningCLI config, exactly what one would type after ``--`` on the command line::

    Variant("bilinear", {"model.init_args.net.init_args.upsampler": "bilinear"},
            paper={"mean_dice": None, "mean_hd95": None})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Metric", "Variant", "AblationTable", "DICE", "HD95", "PARAMS", "GMACS"]


@dataclass(frozen=True)
class Metric:
    """A column of the table: ``name`` is the key in each run's metrics."""

    name: str
    label: str
    higher_is_better: bool
    decimals: int = 2

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "higher_is_better": self.higher_is_better,
                "decimals": self.decimals}


DICE = Metric("mean_dice", "DSC (%)", True)
HD95 = Metric("mean_hd95", "HD95 (voxels)", False)
PARAMS = Metric("params_m", "Params (M)", False, decimals=3)
GMACS = Metric("gmacs", "MACs (G, conv+linear)", False, decimals=3)


@dataclass(frozen=True)
class Variant:
    """One row: config overrides, and the paper's value per metric (``None`` = unknown)."""

    name: str
    overrides: dict[str, Any]
    description: str = ""
    paper: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationTable:
    """A paper table to reproduce.

    ``recipe`` is the paper's full config; ``quick_recipe`` is layered on top for
    ``--quick`` (synthetic data, reduced width and schedule); ``overrides`` apply to
    every variant. ``paper_source`` says where the paper's numbers come from.
    """

    paper: str
    number: int
    subject: str
    title: str
    dataset: str
    recipe: str
    quick_recipe: str
    metrics: tuple[Metric, ...]
    variants: tuple[Variant, ...]
    paper_source: str
    seeds: tuple[int, ...] = (1234,)
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.number}: variant names must be unique, got {names}")
        known = {m.name for m in self.metrics}
        for variant in self.variants:
            unknown = set(variant.paper) - known
            if unknown:
                raise ValueError(f"variant {variant.name}: paper values for unknown metrics {sorted(unknown)}")

    @property
    def key(self) -> str:
        """``table5_upsampling``: the file stem under ``results/<paper>/``."""
        return f"table{self.number}_{self.subject}"

    @property
    def group(self) -> str:
        """The W&B group of every run of this table."""
        return f"{self.paper}-table{self.number}"

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"table {self.number} has no variant {name!r}; choose from {[v.name for v in self.variants]}")
