"""The TransUNet per-case evaluation rules (Synapse, ACDC: CSWin-UNet, D-LKA 2D, Perspective+ Unet).

For every test volume and every foreground class, the binary 3-D masks of
prediction and ground truth are compared with medpy's ``dc`` and ``hd95``
*without voxel spacing* (so "mm" in the papers is really voxels, with unit
spacing on every axis including the slice axis; see
:mod:`lightning_modules.metrics.surface`), and the TransUNet edge rules decide
the empty cases (:func:`case_dice_hd95`). :func:`per_class_case_metrics` does
that for every class of one labelled case. Per class, values are averaged over
cases; the mean over classes gives ``mean_dice`` / ``mean_hd95``
(:func:`summarize_cases`). :func:`transunet_report` (defined in
:mod:`lightning_modules.metrics.summary`, re-exported here) turns a summary into
the flat-key :class:`~lightning_modules.metrics.summary.MetricReport`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lightning_modules.metrics.summary import transunet_report
from lightning_modules.metrics.surface import (
    _as_bool,
    _check_same_shape,
    _normalize_spacing,
    _pooled_surface_distances,
    _to_numpy,
    _union_bbox,
    medpy_dice,
)

__all__ = [
    "case_dice_hd95",
    "per_class_case_metrics",
    "summarize_cases",
    "transunet_report",
    "flatten_summary",
]


def case_dice_hd95(pred: Any, gt: Any, spacing: float | Sequence[float] | None = None) -> tuple[float, float]:
    """TransUNet per-case, per-class rule on binary volumes (any shape, any dtype; nonzero = foreground).

    * prediction and ground truth non-empty → (``medpy_dice``, ``medpy_hd95``);
    * prediction non-empty, ground truth empty → (1.0, 0.0);
    * prediction empty (whatever the ground truth) → (0.0, 0.0).

    Dice is a fraction in [0, 1] here (×100 happens in :func:`summarize_cases`);
    HD95 is in units of ``spacing`` (voxels when ``None``).
    """
    p = _as_bool(pred)
    g = _as_bool(gt)
    _check_same_shape(p, g)
    box = _union_bbox(p | g, margin=1)
    if box is not None:
        p, g = p[box], g[box]
    p_any = bool(p.any())
    g_any = bool(g.any())
    if p_any and g_any:
        sp = _normalize_spacing(spacing, p.ndim)
        dice = medpy_dice(p, g)
        hd = float(np.percentile(_pooled_surface_distances(p, g, sp, "auto", crop=False), 95))
        return float(dice), hd
    if p_any:
        return 1.0, 0.0
    return 0.0, 0.0


def _as_label_volume(x: Any, num_classes: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(_to_numpy(x))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError(
                f"{what} must hold integer class labels, got non-integral values of dtype {arr.dtype}"
            )
        arr = as_int
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{what} holds labels in [{arr.min()}, {arr.max()}] but num_classes={num_classes} "
            f"allows only 0..{num_classes - 1}"
        )
    return arr


def per_class_case_metrics(
    pred_labels: Any,
    gt_labels: Any,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """:func:`case_dice_hd95` for every foreground class of one case.

    Args:
        pred_labels, gt_labels: integer label volumes of the same shape (e.g.
            (D, H, W)); 0 is background. Values outside ``0..num_classes-1`` raise.
        num_classes: number of classes including background.
        spacing: as in :func:`medpy_hd95` (``None`` = voxels, the paper convention).

    Returns:
        float64 array of shape ``(num_classes - 1, 2)``: row ``c - 1`` holds
        ``(dice in [0, 1], hd95)`` of class ``c``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    pred = _as_label_volume(pred_labels, num_classes, "pred_labels")
    gt = _as_label_volume(gt_labels, num_classes, "gt_labels")
    _check_same_shape(pred, gt, "pred_labels and gt_labels")
    out = np.zeros((num_classes - 1, 2), dtype=np.float64)
    # One pass per volume finds every class's bounding box; each class is then
    # evaluated on the union of its two boxes only (exact, see module docstring).
    boxes_p = ndimage.find_objects(pred, max_label=num_classes - 1)
    boxes_g = ndimage.find_objects(gt, max_label=num_classes - 1)
    for c in range(1, num_classes):
        bp, bg = boxes_p[c - 1], boxes_g[c - 1]
        if bp is None and bg is None:
            continue  # both empty: (0, 0) by the empty-prediction rule
        if bp is None or bg is None:
            box = bp if bg is None else bg
        else:
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bp, bg, strict=True))
        out[c - 1] = case_dice_hd95(pred[box] == c, gt[box] == c, spacing)
    return out


def summarize_cases(per_case: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready summary of per-case results, TransUNet style.

    Args:
        per_case: ``{case_name: array (K, 2)}`` as returned by
            :func:`per_class_case_metrics` (Dice as a fraction, HD95).
        class_names: the K foreground class names, in label order 1..K.

    Returns a dict with keys:

    * ``"mean_dice"`` -- mean over classes of the per-class mean Dice, in %;
    * ``"mean_hd95"`` -- mean over classes of the per-class mean HD95 (units of
      the spacing used; voxels by the paper convention);
    * ``"per_class"`` -- ``{class_name: {"dice": % mean over cases, "hd95": mean over cases}}``;
    * ``"per_case"`` -- ``{case_name: {"mean_dice": %, "mean_hd95": ...,
      "dice": {class_name: %}, "hd95": {class_name: ...}}}`` (cases in input order);
    * ``"num_cases"``, ``"class_names"``;
    * ``"dice_unit"`` (``"%"``) and ``"hd95_unit"`` (``"voxels (or spacing units)"``).

    Averaging: per class over cases, then over classes (the TransUNet order; with
    every case holding every class this equals the grand mean).
    """
    names = [str(n) for n in class_names]
    if not per_case:
        raise ValueError("summarize_cases: no cases given")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    cases = list(per_case.keys())
    stacked = []
    for case in cases:
        arr = np.asarray(per_case[case], dtype=np.float64)
        if arr.shape != (len(names), 2):
            raise ValueError(
                f"case {case!r}: expected an array of shape ({len(names)}, 2) "
                f"(one (dice, hd95) row per class in {names}), got {arr.shape}"
            )
        stacked.append(arr)
    data = np.stack(stacked)  # (N, K, 2)
    class_mean = data.mean(axis=0)  # (K, 2)
    per_class = {
        name: {"dice": float(class_mean[k, 0] * 100.0), "hd95": float(class_mean[k, 1])}
        for k, name in enumerate(names)
    }
    per_case_out = {}
    for case, arr in zip(cases, stacked, strict=True):
        per_case_out[str(case)] = {
            "mean_dice": float(arr[:, 0].mean() * 100.0),
            "mean_hd95": float(arr[:, 1].mean()),
            "dice": {name: float(arr[k, 0] * 100.0) for k, name in enumerate(names)},
            "hd95": {name: float(arr[k, 1]) for k, name in enumerate(names)},
        }
    return {
        "mean_dice": float(class_mean[:, 0].mean() * 100.0),
        "mean_hd95": float(class_mean[:, 1].mean()),
        "per_class": per_class,
        "per_case": per_case_out,
        "num_cases": len(cases),
        "class_names": names,
        "dice_unit": "%",
        "hd95_unit": "voxels (or spacing units)",
    }


def flatten_summary(summary: Mapping[str, Any]) -> dict[str, float]:
    """Legacy underscore form of a :func:`summarize_cases` result's scalars (no prefix).

    Keys: ``mean_dice``, ``mean_hd95``, ``dice_<class>`` and ``hd95_<class>``. Kept only
    for callers that have not moved to :func:`transunet_report` yet, whose ``'/'``
    keys (``test/dice/<class>``) are the project's convention; new code should not
    use this.
    """
    flat = {"mean_dice": float(summary["mean_dice"]), "mean_hd95": float(summary["mean_hd95"])}
    for name, vals in summary["per_class"].items():
        flat[f"dice_{name}"] = float(vals["dice"])
        flat[f"hd95_{name}"] = float(vals["hd95"])
    return flat
