"""Declaring a paper table: its variants as config overrides and the paper's numbers as data.

A table script under ``ablations/<paper>/`` builds one :class:`AblationTable` and
hands it to :func:`ablations.framework.runner.main`. Overrides are dotted keys of the
LightningCLI config, exactly what one would type after ``--`` on the command line::

    Variant("bilinear", {"model.init_args.net.init_args.upsampler": "bilinear"},
            paper={"test/mean_dice": None, "test/mean_hd95": None})

Metric names are keys of what a run reports: the task module's flat test metrics
(``test/mean_dice``, ``test/dice/aorta``, ``test/top1`` ...; see
:class:`lightning_modules.metrics.MetricReport`) plus the runner's own columns
(``params_m``, ``gmacs``, ``train_test_seconds``). Nothing here knows the task.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Metric", "Variant", "AblationTable", "PARAMS", "GMACS", "SECONDS", "table_label"]


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


def table_label(number: int | None, subject: str) -> str:
    """``Table 5``, or for a table the paper does not number, ``the repbn decay table``-style text."""
    return f"Table {number}" if number is not None else f"{subject.replace('_', ' ')} table"


# The runner's own columns (any task).
PARAMS = Metric("params_m", "Params (M)", False, decimals=3)
GMACS = Metric("gmacs", "MACs (G, conv+linear)", False, decimals=3)
SECONDS = Metric("train_test_seconds", "Train + test (s)", False, decimals=0)


@dataclass(frozen=True)
class Variant:
    """One row: config overrides, and the paper's value per metric (``None`` = unknown).

    ``quick_overrides`` apply on top of ``overrides`` in ``--quick`` mode only: the reduced
    size of a variant whose network the table's quick layer cannot shrink (another backbone).
    """

    name: str
    overrides: dict[str, Any]
    description: str = ""
    paper: dict[str, float | None] = field(default_factory=dict)
    quick_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationTable:
    """A paper table to reproduce.

    ``recipe`` is the paper's full config; ``quick_recipe`` is layered on top for
    ``--quick`` (reduced width and schedule); ``synthetic_data`` is the config layered
    last when no ``--data-dir`` is given (the data set's synthetic stand-in in the
    same on-disk format). ``overrides`` apply to every variant. ``paper_source`` says
    where the paper's numbers come from. ``seeds`` are the full recipe's (the paper's
    seed first); ``--quick`` runs ``quick_seeds`` of them (extended with the next
    integers) and reports mean ± std. ``script`` is the entry under ``reproduce/``
    (``table5_upsampling`` by default; a later paper with another Table 5 names
    itself, e.g. ``table6_dlka_skip_connections``). ``number`` is ``None`` for a table the
    paper's sources do not number; its key is then ``table_<subject>``.

    ``test_checkpoints`` are the weights each run is tested with: ``"last"`` (the end of
    training) and/or ``"best"`` (the best checkpoint of the recipe's monitored
    ``ModelCheckpoint``, i.e. the paper's model selection). The first is the table's
    (unprefixed metric keys); each other one reports under ``<name>/`` (``last/test/dice``).
    ``plots`` maps a suffix to an extra figure writer ``"module:function"`` taking
    ``(results, png_path)``; it is drawn beside the results as ``<stem>.<suffix>.png``
    (see :func:`ablations.framework.publish.write_results`). ``quick_threads`` sets
    torch's intra-op threads in ``--quick`` mode (``None``: torch's default): a tiny network
    runs faster on one thread, with the data worker on the other core.
    """

    paper: str
    number: int | None
    subject: str
    title: str
    dataset: str
    recipe: str
    quick_recipe: str
    synthetic_data: str
    metrics: tuple[Metric, ...]
    variants: tuple[Variant, ...]
    paper_source: str
    seeds: tuple[int, ...] = (1234,)
    quick_seeds: int = 3
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    script: str | None = None
    test_checkpoints: tuple[str, ...] = ("last",)
    plots: dict[str, str] = field(default_factory=dict)
    quick_threads: int | None = None

    def __post_init__(self) -> None:
        if not self.test_checkpoints or set(self.test_checkpoints) - {"last", "best"} \
                or len(set(self.test_checkpoints)) != len(self.test_checkpoints):
            raise ValueError(f"{self.label}: test_checkpoints must be distinct names out of "
                             f"'last' and 'best', got {self.test_checkpoints}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.label}: variant names must be unique, got {names}")
        known = {m.name for m in self.metrics}
        for variant in self.variants:
            unknown = set(variant.paper) - known
            if unknown:
                raise ValueError(f"variant {variant.name}: paper values for unknown metrics {sorted(unknown)}")

    @property
    def key(self) -> str:
        """``table5_upsampling`` (``table_repbn_decay`` without a number): the file stem under ``results/<paper>/``."""
        return f"table{'' if self.number is None else self.number}_{self.subject}"

    @property
    def label(self) -> str:
        """``Table 5`` (or ``repbn decay table`` when the paper gives no number): how text names it."""
        return table_label(self.number, self.subject)

    @property
    def command(self) -> str:
        """``python reproduce/<script>.py``: how users run this table."""
        return f"python reproduce/{self.script or self.key}.py"

    def results_file(self, out_dir: Path, *, data_kind: str, quick: bool) -> Path:
        """``<out_dir>/<paper>/table5_upsampling.json`` for the paper recipe on real data, else
        ``table5_upsampling.<quick-synthetic|synthetic|quick-real>.json``."""
        mode = "" if (data_kind == "real" and not quick) else f".{'quick-' if quick else ''}{data_kind}"
        return Path(out_dir) / self.paper / f"{self.key}{mode}.json"

    @property
    def group(self) -> str:
        """The W&B group of every run of this table."""
        return f"{self.paper}-{self.tag}"

    @property
    def tag(self) -> str:
        """``table5`` (``table_repbn_decay`` without a number): the W&B tag of its runs."""
        return self.key if self.number is None else f"table{self.number}"

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"{self.label} has no variant {name!r}; choose from {[v.name for v in self.variants]}")
