"""The ConvFormer release's 2-D evaluation (``utils/evaluation.py`` @ 80e1b4b), both modes.

Predictions are argmax label maps; every image gives one record (:func:`image_record`)
of per-foreground-class statistics, keyed by its image id, so records of several
processes can be gathered exactly (:func:`lightning_modules.distributed.gather_cases`)
before aggregation. K = num_classes − 1 foreground classes; class 0 is never scored.

* ``"patient"`` mode (ACDC, ICH; the release's ``eval_2d_patient``): TP/FP/FN/TN summed
  over all slices of a patient (patient id = the image id's first 4 characters), then
  per patient and class ``dice = 2TP/(2TP+FP+FN+1e-6)`` (a class absent from both
  prediction and ground truth scores **0**), and with ``s = 1e-4`` ``iou = (TP+s)/(TP+FP+FN+s)``
  (empty-empty 1), ``acc = (TP+TN+s)/(TP+FP+FN+TN+s)``, ``se = (TP+s)/(TP+FN+s)``,
  ``sp = (TN+s)/(TN+FP+s)``.
* ``"image"`` mode (ISIC; the release's ``eval_2d_slice``, which it calls ``"slice"``): the
  same per image with ``s = 1e-5`` and ``dice = (2TP+s)/(2TP+FP+FN+s)`` (empty-empty 1).

Either way: the mean over cases (patients or images) per class, then over the K classes.

Distances, per image and class, aggregated per patient by the **maximum over its slices**
(the release's rule for its HD; 0 for a patient whose slices are all 0), per image as is:

* ``row_hausdorff_l1`` -- the release's "HD": ``hausdorff.hausdorff_distance(pred, gt,
  distance="manhattan")`` on the two H×W masks, which reads each image **row** as a point
  of W-dim space: the Hausdorff distance between the two sets of row vectors under L1. The
  release's masks are 0/1 there (its ``get_matrix`` / ``dice_coefficient`` binarise them in
  place before the call), so the L1 distance of two rows is the number of pixels in which
  they differ: the value is in "pixels per row", not a boundary distance. A mask is never an
  empty point set (an empty mask is H zero rows), so no special case arises: both empty → 0;
  one empty → the other's largest per-row foreground count (a zero row of the non-empty mask,
  if any, is at distance 0 from the empty mask's rows). The package returns 0 for a truly
  empty point set (its ``np.inf > cmin`` guard); here that happens only for H = 0.
* ``hd95`` -- a standard HD95 alongside: medpy's pooled 95th percentile of the 2-D surface
  distances of the slice (:mod:`~lightning_modules.metrics.surface`, pixel units), with the
  TransUNet empty-mask rules of :func:`~lightning_modules.metrics.transunet.case_dice_hd95`
  (either mask empty → 0). Per patient the maximum over slices, like the release's HD. This
  aggregation is the project's choice (image ids carry no slice order, so no 3-D volume).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from lightning_modules.metrics.summary import MetricReport
from lightning_modules.metrics.transunet import _as_label_volume, case_dice_hd95

__all__ = [
    "EvalMode",
    "CONVFORMER_SCORES",
    "normalize_eval_mode",
    "patient_id",
    "class_counts",
    "row_hausdorff_l1",
    "slice_hd95",
    "image_record",
    "case_scores",
    "mean_foreground_dice",
    "convformer_report",
]

EvalMode = Literal["patient", "image"]

#: Score names in report order; the first five are ratios (reported in %), the last two distances.
CONVFORMER_SCORES = ("dice", "iou", "acc", "se", "sp", "row_hausdorff_l1", "hd95")
_RATIOS = CONVFORMER_SCORES[:5]
_SMOOTH = {"patient": 1e-4, "image": 1e-5}


def normalize_eval_mode(mode: str) -> EvalMode:
    """``"patient"`` or ``"image"``; the release's name ``"slice"`` is accepted for ``"image"``."""
    mode = {"slice": "image"}.get(str(mode), str(mode))
    if mode not in ("patient", "image"):
        raise ValueError(f"eval_mode must be 'patient' or 'image' (release: 'slice'), got {mode!r}")
    return mode  # type: ignore[return-value]


def patient_id(image_id: str) -> str:
    """The release's patient of an image: the first 4 characters of its id (``int(name[:4])`` there)."""
    return str(image_id)[:4]


def class_counts(pred: Any, gt: Any, num_classes: int) -> np.ndarray:
    """TP, FP, FN, TN of every foreground class: int64 ``(K, 4)`` from label maps of equal shape."""
    p = _as_label_volume(pred, num_classes, "pred")
    g = _as_label_volume(gt, num_classes, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    joint = np.bincount(p.ravel().astype(np.int64) * num_classes + g.ravel(), minlength=num_classes**2)
    joint = joint.reshape(num_classes, num_classes)  # [pred class, gt class]
    tp = np.diag(joint)
    fp = joint.sum(1) - tp
    fn = joint.sum(0) - tp
    tn = p.size - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1)[1:].astype(np.int64)


def row_hausdorff_l1(pred_mask: Any, gt_mask: Any) -> float:
    """The release's "HD": Hausdorff distance between the row vectors of two binary (H, W) masks under L1.

    ``max(max_i min_j |p_i − g_j|₁, max_j min_i |p_i − g_j|₁)`` over rows p_i of ``pred_mask``
    and g_j of ``gt_mask`` (nonzero = 1). See the module docstring for the empty-mask values.
    """
    p = np.asarray(pred_mask) != 0
    g = np.asarray(gt_mask) != 0
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"row_hausdorff_l1 needs two (H, W) masks of one shape, got {p.shape} and {g.shape}")
    if p.shape[0] == 0:
        return 0.0
    a, b = p.astype(np.float64), g.astype(np.float64)
    # |a − b|₁ = |a| + |b| − 2 a·b for 0/1 vectors; integers far below 2**53, so exact in float64
    dist = a.sum(1)[:, None] + b.sum(1)[None, :] - 2.0 * (a @ b.T)
    return float(max(dist.min(1).max(), dist.min(0).max()))


def slice_hd95(pred_mask: Any, gt_mask: Any) -> float:
    """medpy HD95 of two 2-D binary masks in pixels; 0 when either is empty (TransUNet rules)."""
    return case_dice_hd95(pred_mask, gt_mask)[1]


def image_record(pred: Any, gt: Any, num_classes: int, patient: str | None = None,
                 image_id: str | None = None, distances: bool = True) -> dict[str, Any]:
    """Everything the protocol needs from one image.

    Args:
        pred, gt: integer label maps ``(H, W)`` (numpy or torch).
        patient: its patient id (default: :func:`patient_id` of ``image_id``).
        distances: also compute the two distances (test); ``False`` for Dice-only validation.

    Returns ``{"patient": str, "counts": int64 (K, 4)}`` and, with ``distances``,
    ``"row_hausdorff_l1"`` and ``"hd95"``: float64 ``(K,)``.
    """
    if patient is None:
        if image_id is None:
            raise ValueError("image_record needs a patient or an image_id")
        patient = patient_id(image_id)
    p = _as_label_volume(pred, num_classes, "pred")
    g = _as_label_volume(gt, num_classes, "gt")
    record: dict[str, Any] = {"patient": str(patient), "counts": class_counts(p, g, num_classes)}
    if distances:
        if p.ndim != 2:
            raise ValueError(f"distances need (H, W) label maps, got shape {p.shape}")
        classes = range(1, num_classes)
        record["row_hausdorff_l1"] = np.array([row_hausdorff_l1(p == c, g == c) for c in classes], np.float64)
        record["hd95"] = np.array([slice_hd95(p == c, g == c) for c in classes], np.float64)
    return record


def _ratios(counts: np.ndarray, mode: EvalMode) -> dict[str, np.ndarray]:
    """The five ratios per class from float64 ``(K, 4)`` counts."""
    tp, fp, fn, tn = counts.astype(np.float64).T
    s = _SMOOTH[mode]
    dice = 2 * tp / (2 * tp + fp + fn + 1e-6) if mode == "patient" else (2 * tp + s) / (2 * tp + fp + fn + s)
    return {
        "dice": dice,
        "iou": (tp + s) / (tp + fp + fn + s),
        "acc": (tp + tn + s) / (tp + fp + fn + tn + s),
        "se": (tp + s) / (tp + fn + s),
        "sp": (tn + s) / (tn + fp + s),
    }


def _groups(records: Mapping[str, Mapping[str, Any]], mode: EvalMode) -> dict[str, list[str]]:
    """Case id → its image ids, both sorted: patients in patient mode, the images themselves otherwise."""
    groups: dict[str, list[str]] = {}
    for image in sorted(records):
        groups.setdefault(str(records[image]["patient"]) if mode == "patient" else image, []).append(image)
    return {case: groups[case] for case in sorted(groups)}


def case_scores(records: Mapping[str, Mapping[str, Any]], mode: str) -> dict[str, dict[str, Any]]:
    """Per case (patient or image, sorted): ``{score: float64 (K,)}`` for the scores available, plus ``num_images``.

    ``records``: ``{image_id: image_record(...)}`` (all processes' records, each image once).
    Distances (when the records have them) are the maximum over the case's images.
    """
    mode = normalize_eval_mode(mode)
    if not records:
        raise ValueError("no images to evaluate")
    out: dict[str, dict[str, Any]] = {}
    for case, images in _groups(records, mode).items():
        group = [records[i] for i in images]
        scores: dict[str, Any] = _ratios(np.sum([r["counts"] for r in group], axis=0), mode)
        for name in ("row_hausdorff_l1", "hd95"):
            if all(name in r for r in group):
                scores[name] = np.max([np.asarray(r[name], np.float64) for r in group], axis=0).clip(min=0.0)
        scores["num_images"] = len(images)
        out[case] = scores
    return out


def _class_means(cases: Mapping[str, Mapping[str, Any]], name: str) -> np.ndarray:
    """Per class, the mean of ``name`` over cases in their (sorted) order: ``(K,)``."""
    return np.mean(np.stack([np.asarray(s[name], np.float64) for s in cases.values()]), axis=0)


def mean_foreground_dice(records: Mapping[str, Mapping[str, Any]], mode: str) -> float:
    """The release's model-selection number: mean over foreground classes of the per-class mean Dice (a fraction)."""
    return float(_class_means(case_scores(records, mode), "dice").mean())


def convformer_report(records: Mapping[str, Mapping[str, Any]], mode: str, class_names: Sequence[str],
                      prefix: str = "test", meta: Mapping[str, Any] | None = None) -> MetricReport:
    """The protocol's :class:`MetricReport` from the gathered per-image records.

    * metrics: ``<prefix>/<score>`` (mean over foreground classes) and ``<prefix>/<score>/<class>``
      for ``dice, iou, acc, se, sp`` (in %) and ``row_hausdorff_l1`` (L1 row distance of 0/1
      masks), ``hd95`` (pixels);
    * cases: one row per patient (patient mode) or image: ``{"case", "num_images",
      "<score>": mean over classes, "<score>/<class>": ...}``;
    * meta: ``eval_mode``, ``num_cases``, ``num_images``, ``class_names``, ``units``, then ``meta``.
    """
    mode = normalize_eval_mode(mode)
    names = [str(n) for n in class_names]
    cases = case_scores(records, mode)
    first = next(iter(cases.values()))
    if len(first["dice"]) != len(names):
        raise ValueError(f"{len(names)} class names {names} for {len(first['dice'])} foreground classes")
    scores = [s for s in CONVFORMER_SCORES if s in first]
    scale = {s: 100.0 if s in _RATIOS else 1.0 for s in scores}
    metrics: dict[str, float] = {}
    for score in scores:
        per_class = _class_means(cases, score) * scale[score]
        metrics[f"{prefix}/{score}"] = float(per_class.mean())
        metrics.update({f"{prefix}/{score}/{n}": float(v) for n, v in zip(names, per_class, strict=True)})
    rows = []
    for case, values in cases.items():
        row: dict[str, Any] = {"case": case, "num_images": int(values["num_images"])}
        for score in scores:
            per_class = np.asarray(values[score], np.float64) * scale[score]
            row[score] = float(per_class.mean())
            row.update({f"{score}/{n}": float(v) for n, v in zip(names, per_class, strict=True)})
        rows.append(row)
    units = {s: "%" for s in _RATIOS}
    units.update(row_hausdorff_l1="L1 distance between mask rows (differing pixels per row)", hd95="pixels")
    info: dict[str, Any] = {"eval_mode": mode, "num_cases": len(cases), "num_images": len(records),
                            "class_names": names, "units": {s: units[s] for s in scores}}
    info.update(meta or {})
    return MetricReport(metrics=metrics, cases=rows, meta=info)
