"""Flat ``'/'`` metric keys and the task-independent report of a test run.

This is the one place that writes the flat keys read by loggers (W&B), the
ablation runner and the results writer:

* :func:`flatten_metrics` -- a nested mapping of numbers to ``{"test/dice/aorta": 90.0, ...}``;
* :class:`MetricReport` -- what a task LightningModule reports after ``test``:
  flat metrics, one row per evaluated case, and a free-form ``meta`` description;
  JSON round trip via :meth:`MetricReport.to_json` / :meth:`MetricReport.from_json`;
* :func:`transunet_report` -- a :func:`~lightning_modules.metrics.transunet.summarize_cases`
  result as a :class:`MetricReport`.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["flatten_metrics", "MetricReport", "transunet_report"]


def _as_float(value: Any, key: str) -> float | None:
    """``value`` as a python float (None stays None); TypeError naming ``key`` otherwise."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and not value.is_complex():
            return float(value.item())
    elif isinstance(value, np.ndarray):
        real = value.dtype.kind in "biuf"  # bool, int, unsigned, float
        if value.ndim == 0 and real:
            return float(value)
    elif isinstance(value, numbers.Real | np.bool_):  # python int/float/bool, numpy real scalars
        return float(value)
    raise TypeError(
        f"metric {key!r}: expected a number (python, numpy or 0-d torch) or None, "
        f"got {type(value).__name__} {value!r:.80}"
    )


def flatten_metrics(nested: Mapping[str, Any], prefix: str | None = None, sep: str = "/") -> dict[str, float]:
    """``{"mean_dice": 80.0, "dice": {"aorta": 90.0}}``, prefix ``"test"`` ->
    ``{"test/mean_dice": 80.0, "test/dice/aorta": 90.0}``.

    Nested mappings are joined with ``sep``; numbers (python/numpy/0-d torch) become
    float; None stays None; other leaves (strings, lists) raise ``TypeError`` naming
    the key. Insertion order is kept. ``prefix`` ``None`` or ``""`` adds nothing. Two
    paths that flatten to the same key (``{"a/b": 1, "a": {"b": 2}}``) raise
    ``ValueError``.
    """
    flat: dict[str, float] = {}

    def walk(mapping: Mapping[str, Any], base: str | None) -> None:
        for k, v in mapping.items():
            key = str(k) if base is None else f"{base}{sep}{k}"
            if isinstance(v, Mapping):
                walk(v, key)
                continue
            if key in flat:
                raise ValueError(f"flatten_metrics: two entries flatten to the same key {key!r}")
            flat[key] = _as_float(v, key)

    if not isinstance(nested, Mapping):
        raise TypeError(f"flatten_metrics expects a mapping, got {type(nested).__name__}")
    walk(nested, prefix or None)
    return flat


@dataclass
class MetricReport:
    """What a task LightningModule reports after ``test``: the task-independent contract read by the
    ablation runner, the results writer and the W&B logging.

    Attributes:
        metrics: flat ``'/'`` keys, e.g. ``'test/mean_dice'``, ``'test/dice/aorta'``
            (normalised through :func:`flatten_metrics` on construction, so values are
            python floats or None).
        cases: one row per evaluated case: ``{'case': name, '<metric>': value, ...}``,
            keys ``'/'``-flattened, no prefix.
        meta: protocol description, units, data kind ...
    """

    metrics: dict[str, float]
    cases: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = flatten_metrics(self.metrics)
        self.cases = [dict(row) for row in self.cases]
        self.meta = dict(self.meta)

    def to_json(self) -> dict[str, Any]:
        """``{"metrics": ..., "cases": ..., "meta": ...}`` (copies; ``json.dumps``-able when ``meta`` is)."""
        return {
            "metrics": dict(self.metrics),
            "cases": [dict(row) for row in self.cases],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> MetricReport:
        """Inverse of :meth:`to_json`; also accepts the JSON text itself. ``cases``/``meta`` may be absent."""
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if not isinstance(data, Mapping) or "metrics" not in data:
            raise ValueError("MetricReport.from_json expects a mapping with at least a 'metrics' entry")
        return cls(
            metrics=dict(data["metrics"]), cases=list(data.get("cases") or []), meta=dict(data.get("meta") or {})
        )

    def case_columns(self) -> list[str]:
        """``'case'`` first, then the union of the rows' keys in first-seen order."""
        columns = {"case": None}
        for row in self.cases:
            columns.update(dict.fromkeys(row))
        return list(columns)


def transunet_report(
    summary: Mapping[str, Any], prefix: str | None = "test", meta: Mapping[str, Any] | None = None
) -> MetricReport:
    """A :func:`~lightning_modules.metrics.transunet.summarize_cases` result as a :class:`MetricReport`.

    * metrics: ``<prefix>/mean_dice``, ``<prefix>/mean_hd95``, ``<prefix>/dice/<class>`` (every
      class), ``<prefix>/hd95/<class>`` (every class), in that order;
    * cases: ``{'case', 'mean_dice', 'mean_hd95', 'dice/<class>'..., 'hd95/<class>'...}`` per case,
      in the summary's case order;
    * meta: ``num_cases``, ``class_names``, ``dice_unit``, ``hd95_unit`` of the summary, then ``meta``
      (whose entries win on a clash).

    Dice is in % and HD95 in the summary's units, exactly as in the summary.
    """
    per_class = summary["per_class"]
    metrics = flatten_metrics(
        {
            "mean_dice": summary["mean_dice"],
            "mean_hd95": summary["mean_hd95"],
            "dice": {name: vals["dice"] for name, vals in per_class.items()},
            "hd95": {name: vals["hd95"] for name, vals in per_class.items()},
        },
        prefix=prefix,
    )
    cases = []
    for case, row in summary["per_case"].items():
        flat = flatten_metrics(
            {"mean_dice": row["mean_dice"], "mean_hd95": row["mean_hd95"], "dice": row["dice"], "hd95": row["hd95"]}
        )
        cases.append({"case": str(case), **flat})
    info: dict[str, Any] = {
        "num_cases": summary["num_cases"],
        "class_names": list(summary["class_names"]),
        "dice_unit": summary["dice_unit"],
        "hd95_unit": summary["hd95_unit"],
    }
    info.update(meta or {})
    return MetricReport(metrics=metrics, cases=cases, meta=info)
