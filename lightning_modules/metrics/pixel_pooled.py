"""Pixel-pooled binary statistics (skin lesions: ISIC 2017/2018, PH2, following the HiFormer lineage).

True/false positives/negatives are counted over every pixel passed in (typically
the whole test set) and DSC, SE, SP and ACC are computed once from the pooled
counts -- not averaged per image.

* :func:`binary_confusion_counts` / :func:`confusion_metrics_from_counts` /
  :func:`binary_confusion_metrics` -- numpy, one call on everything at once;
* :class:`PooledBinaryMetrics` (alias :data:`BinaryConfusionAccumulator`) -- the same
  pooled over batches, a torchmetrics ``Metric`` built on ``BinaryStatScores``
  (exact integer counts, summed across processes on ``compute()``).

Inputs are binary of any shape and dtype, numpy arrays or torch tensors:
nonzero (and NaN) is positive, so threshold probabilities first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.classification import BinaryStatScores

from lightning_modules.metrics.surface import _as_bool, _check_same_shape

__all__ = [
    "binary_confusion_counts",
    "confusion_metrics_from_counts",
    "binary_confusion_metrics",
    "PooledBinaryMetrics",
    "BinaryConfusionAccumulator",
]


def binary_confusion_counts(pred: Any, gt: Any) -> dict[str, int]:
    """Pixel counts ``tp``, ``fp``, ``fn``, ``tn`` of two same-shape binary arrays (nonzero = positive)."""
    p = _as_bool(pred)
    g = _as_bool(gt)
    _check_same_shape(p, g)
    tp = int(np.count_nonzero(p & g))
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    fp = n_p - tp
    fn = n_g - tp
    tn = int(p.size) - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: int, den: int) -> float:
    # A zero denominator implies a zero numerator here: nothing to get wrong → 1.0.
    return 1.0 if den == 0 else num / den


def confusion_metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """DSC, SE, SP, ACC (fractions in [0, 1]) from pooled pixel counts.

    DSC = 2TP/(2TP+FP+FN), SE = TP/(TP+FN), SP = TN/(TN+FP),
    ACC = (TP+TN)/(TP+TN+FP+FN).

    Zero division: each ratio whose denominator is 0 has a numerator of 0 too
    (e.g. SE when the ground truth has no positive pixel) and is returned as
    1.0 -- there was nothing to detect or to reject, so nothing was missed (the
    same choice as medpy's ``dc`` on two empty masks). No pixels at all
    (all counts 0) raises ``ValueError``.
    """
    total = tp + fp + fn + tn
    if total == 0:
        raise ValueError("binary confusion metrics of zero pixels are undefined")
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"negative confusion counts: tp={tp} fp={fp} fn={fn} tn={tn}")
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": (tp + tn) / total,
    }


def binary_confusion_metrics(pred: Any, gt: Any) -> dict[str, float]:
    """Pixel-pooled ``dice``, ``sensitivity``, ``specificity``, ``accuracy`` over everything passed in.

    ``pred``, ``gt``: same-shape binary arrays of any rank (e.g. a whole test
    set stacked as (N, H, W)); nonzero is positive, so threshold probabilities
    first. Values are fractions in [0, 1]. See
    :func:`confusion_metrics_from_counts` for the definitions and the
    zero-division rule. To pool over a data set batch by batch use
    :class:`PooledBinaryMetrics`.
    """
    return confusion_metrics_from_counts(**binary_confusion_counts(pred, gt))


def _binary_long(x: Any) -> torch.Tensor:
    """0/1 ``long`` tensor of ``x`` (nonzero and NaN → 1), at least 1-d; tensors keep their device."""
    if isinstance(x, torch.Tensor):
        return torch.atleast_1d(x.detach() != 0).long()
    return torch.from_numpy(_as_bool(x)).long()


class PooledBinaryMetrics(BinaryStatScores):
    """Pixel-pooled ``dice``, ``sensitivity``, ``specificity``, ``accuracy`` accumulated over batches.

    A torchmetrics ``BinaryStatScores`` with ``multidim_average="global"``: its
    ``tp``/``fp``/``tn``/``fn`` states are exact integer (``long``) counts over every
    pixel of every :meth:`update`, summed across processes when :meth:`compute`
    runs under ``torch.distributed`` (and reset by :meth:`reset`). :meth:`compute`
    returns the dict of :func:`confusion_metrics_from_counts` on the pooled counts
    (python floats, the same zero-division rules; no pixel at all raises
    ``ValueError``), so one process equals :func:`binary_confusion_metrics` on the
    concatenated data, and several processes equal one.

    :meth:`update` takes binary ``pred``/``gt`` of the same (any) shape, numpy or
    torch, any dtype, with **nonzero = positive**. Both are converted to ``long``
    0/1 first and flattened to ``(1, numel)``; since they are integer,
    ``BinaryStatScores`` treats them as labels and its ``threshold`` (left at 0.5)
    and logit detection never apply -- passing float probabilities straight to
    ``BinaryStatScores`` would instead threshold them at 0.5, which is not this
    convention. Argument validation is off (the conversion guarantees 0/1); shapes
    are still checked (``ValueError``). Inputs are moved to the metric's device.

    >>> acc = PooledBinaryMetrics()
    >>> acc.update(np.array([1, 0]), np.array([1, 1]))
    >>> acc.compute()["sensitivity"]
    0.5
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(threshold=0.5, multidim_average="global", ignore_index=None, validate_args=False, **kwargs)

    def update(self, pred: Any, gt: Any) -> None:  # type: ignore[override]
        """Add the counts of one batch (same-shape binary arrays, nonzero = positive)."""
        p = _binary_long(pred)
        g = _binary_long(gt)
        if p.shape != g.shape:
            raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
        super().update(p.reshape(1, -1).to(self.device), g.reshape(1, -1).to(self.device))

    def counts(self) -> dict[str, int]:
        """The pooled ``tp``, ``fp``, ``fn``, ``tn`` of this process (not synced) as python ints."""
        tp, fp, tn, fn = self._final_state()
        return {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()), "tn": int(tn.sum())}

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """``{"dice", "sensitivity", "specificity", "accuracy"}`` of the pooled (synced) counts."""
        return confusion_metrics_from_counts(**self.counts())


BinaryConfusionAccumulator = PooledBinaryMetrics
"""The name of the pre-torchmetrics accumulator; same class."""
