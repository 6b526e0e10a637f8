"""Segmentation metrics, each implementing one named evaluation convention.

Two conventions are implemented here (numpy + ``scipy.ndimage`` only; medpy is
the reference in the tests but is not needed at run time):

**medpy / TransUNet volumetric convention** (Synapse, ACDC: CSWin-UNet, D-LKA 2D,
Perspective+ Unet). For every test volume and every foreground class, the binary
3-D masks of prediction and ground truth are compared with medpy's ``dc`` and
``hd95`` *without voxel spacing* (so "mm" in the papers is really voxels, with
unit spacing on every axis including the slice axis), and the TransUNet edge
rules decide the empty cases (:func:`case_dice_hd95`). Per class, values are
averaged over cases; the mean over classes gives ``mean_dice`` / ``mean_hd95``
(:func:`summarize_cases`).

* :func:`medpy_dice` -- ``2|A∩B| / (|A| + |B|)``; 1.0 when both masks are empty
  (medpy's ``ZeroDivisionError`` branch).
* :func:`medpy_hd95` -- medpy's 95th-percentile Hausdorff distance. Surface of a
  mask ``M``: ``M XOR binary_erosion(M, generate_binary_structure(ndim, 1))``
  (face connectivity, one iteration, voxels outside the array count as
  background, so an object touching the array border has a surface there).
  The distances from every surface voxel of A to the nearest surface voxel of B
  (Euclidean, scaled by ``spacing``) and from every surface voxel of B to the
  nearest of A are **pooled into one array** and numpy's default (linear
  interpolation) 95th percentile of the pooled array is returned. This differs
  from MONAI, which takes the percentile of each direction separately and then
  the maximum.

  For speed, both masks are first cropped to the bounding box of their union
  (plus a one-voxel margin, clipped at the array border). This is exact: outside
  that box both masks are background, so the erosion sees the same neighbours,
  and every surface voxel lies inside the box, so nearest-surface distances are
  unchanged. The nearest surface voxel is then found either by a Euclidean
  distance transform of the complement of the other surface (medpy's literal
  procedure) or by an exact nearest-neighbour query on the surface voxel
  coordinates (a k-d tree), whichever is cheaper; the distance itself is always
  evaluated with the same floating-point formula as scipy's distance transform.

**Pixel-pooled binary convention** (skin lesions: ISIC 2017/2018, PH2, following
the HiFormer lineage): true/false positives/negatives are counted over every
pixel passed in (typically the whole test set) and DSC, SE, SP and ACC are
computed once from the pooled counts (:func:`binary_confusion_metrics`,
:class:`BinaryConfusionAccumulator`).

Inputs may be numpy arrays, anything ``np.asarray`` accepts, or CPU/GPU torch
tensors (moved to the CPU). Binary inputs follow medpy: any dtype, nonzero (and
NaN) is foreground.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "medpy_dice",
    "medpy_hd95",
    "medpy_hd95_voxel",
    "surface_voxels",
    "crop_to_union",
    "case_dice_hd95",
    "per_class_case_metrics",
    "summarize_cases",
    "flatten_summary",
    "binary_confusion_counts",
    "confusion_metrics_from_counts",
    "binary_confusion_metrics",
    "BinaryConfusionAccumulator",
]

HD95Method = Literal["auto", "edt", "kdtree"]

# In "auto" mode the distance transform is used when the cropped box is small;
# otherwise the k-d tree on surface voxels (cost ~ surface size, not volume).
_EDT_MAX_VOXELS = 32_768


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of ``x``; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool(x: Any) -> np.ndarray:
    """Binary mask, medpy style: nonzero is foreground; 0-d becomes 1-d."""
    arr = _to_numpy(x)
    if arr.dtype != np.bool_:
        arr = arr.astype(np.bool_)
    return np.atleast_1d(arr)


def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str = "pred and gt") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} must have the same shape, got {a.shape} and {b.shape}")


def _normalize_spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray | None:
    """``None`` (unit voxels), a scalar for every axis, or one value per axis."""
    if spacing is None:
        return None
    arr = np.asarray(spacing, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(ndim, float(arr))
    if arr.shape != (ndim,):
        raise ValueError(f"spacing must be a scalar or have {ndim} values (one per axis), got {spacing!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"spacing values must be positive and finite, got {spacing!r}")
    return np.ascontiguousarray(arr)


def _union_bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels (clipped); None if empty."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        profile = mask.any(axis=other) if other else mask
        idx = np.flatnonzero(profile)
        if idx.size == 0:
            return None
        lo = max(int(idx[0]) - margin, 0)
        hi = min(int(idx[-1]) + 1 + margin, mask.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)


def crop_to_union(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Crop two same-shape boolean masks to the bounding box of ``a | b`` (+``margin``).

    Returns the inputs unchanged when the union is empty.
    """
    box = _union_bbox(a | b, margin)
    if box is None:
        return a, b
    return a[box], b[box]


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """medpy's surface: ``mask XOR binary_erosion(mask, face-connected structure, 1 iteration)``.

    ``mask``: boolean array of any rank. Voxels outside the array count as
    background (``binary_erosion``'s default ``border_value=0``).
    """
    # Erosion by the cross (centre + 2·ndim face neighbours) written as shifted
    # ANDs; identical to ndimage.binary_erosion(mask, generate_binary_structure(ndim, 1))
    # with border_value=0, and several times faster.
    mask = np.asarray(mask, dtype=np.bool_)
    eroded = mask.copy()
    for axis in range(mask.ndim):
        n = mask.shape[axis]
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        eroded[tuple(hi)] &= mask[tuple(lo)]  # neighbour at index - 1
        eroded[tuple(lo)] &= mask[tuple(hi)]  # neighbour at index + 1
        edge = [slice(None)] * mask.ndim
        edge[axis] = 0
        eroded[tuple(edge)] = False  # outside the array is background
        edge[axis] = n - 1
        eroded[tuple(edge)] = False
    return mask ^ eroded


def _edt_formula_distances(diff: np.ndarray, spacing: np.ndarray | None) -> np.ndarray:
    """sqrt(sum_i (diff_i * spacing_i)^2) over axes in order, as scipy's EDT evaluates it.

    ``diff``: (N, ndim) integer coordinate differences.
    """
    diff = diff.astype(np.float64)
    acc = None
    for axis in range(diff.shape[1]):
        d = diff[:, axis]
        if spacing is not None:
            d = d * spacing[axis]
        d = d * d
        acc = d if acc is None else acc + d
    return np.sqrt(acc)


def _directed_distances_kdtree(
    from_coords: np.ndarray, to_coords: np.ndarray, spacing: np.ndarray | None
) -> np.ndarray:
    """Distance from each point of ``from_coords`` to its nearest point of ``to_coords``."""
    scale = np.ones(from_coords.shape[1]) if spacing is None else spacing
    tree = cKDTree(to_coords * scale)
    _, nearest = tree.query(from_coords * scale, k=1, workers=-1)
    return _edt_formula_distances(to_coords[nearest] - from_coords, spacing)


def _pooled_surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: np.ndarray | None, method: HD95Method, crop: bool = True
) -> np.ndarray:
    """Both directed surface-distance arrays of two non-empty boolean masks, concatenated (A→B then B→A)."""
    if crop:
        a, b = crop_to_union(a, b, margin=1)
    surf_a = surface_voxels(a)
    surf_b = surface_voxels(b)
    if method == "auto":
        method = "edt" if a.size <= _EDT_MAX_VOXELS else "kdtree"
    if method == "edt":
        d_ab = ndimage.distance_transform_edt(~surf_b, sampling=spacing)[surf_a]
        d_ba = ndimage.distance_transform_edt(~surf_a, sampling=spacing)[surf_b]
    elif method == "kdtree":
        ca = np.argwhere(surf_a)
        cb = np.argwhere(surf_b)
        d_ab = _directed_distances_kdtree(ca, cb, spacing)
        d_ba = _directed_distances_kdtree(cb, ca, spacing)
    else:
        raise ValueError(f"method must be 'auto', 'edt' or 'kdtree', got {method!r}")
    return np.hstack((d_ab, d_ba))


# --------------------------------------------------------------------------- #
# medpy convention
# --------------------------------------------------------------------------- #
def medpy_dice(pred: Any, gt: Any) -> float:
    """medpy ``dc``: ``2|P∩G| / (|P| + |G|)`` on binary masks of any shape and dtype.

    Nonzero is foreground. Returns 1.0 when both masks are empty (as medpy).
    """
    p = _as_bool(pred)
    g = _as_bool(gt)
    _check_same_shape(p, g)
    inter = np.count_nonzero(p & g)
    total = np.count_nonzero(p) + np.count_nonzero(g)
    if total == 0:
        return 1.0
    return 2.0 * inter / float(total)


def medpy_hd95(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] | None = None,
    *,
    method: HD95Method = "auto",
) -> float:
    """medpy ``hd95``: 95th percentile of the pooled symmetric surface distances.

    Args:
        pred, gt: binary masks of the same shape (any rank, any dtype; nonzero is
            foreground). Both must be non-empty (medpy raises too); use
            :func:`case_dice_hd95` for the TransUNet empty-mask rules.
        spacing: voxel size per axis (scalar or one value per axis). ``None`` =
            unit voxels, the Synapse/ACDC literature's convention (its "mm" are
            voxels).
        method: ``"edt"`` (distance transform of the other surface's complement,
            medpy's procedure), ``"kdtree"`` (exact nearest-neighbour search on
            surface voxels) or ``"auto"`` (the cheaper one). All give the same
            distances; they only differ in speed.

    Returns:
        ``np.percentile(concat(d(∂P→∂G), d(∂G→∂P)), 95)`` (linear interpolation),
        in units of ``spacing``.
    """
    p = _as_bool(pred)
    g = _as_bool(gt)
    _check_same_shape(p, g)
    if not p.any():
        raise ValueError("medpy_hd95: the prediction mask is empty (HD95 is undefined)")
    if not g.any():
        raise ValueError("medpy_hd95: the ground-truth mask is empty (HD95 is undefined)")
    sp = _normalize_spacing(spacing, p.ndim)
    return float(np.percentile(_pooled_surface_distances(p, g, sp, method), 95))


def medpy_hd95_voxel(pred: Any, gt: Any) -> float:
    """medpy HD95 in voxel units (unit spacing on every axis), as the TransUNet-lineage papers report it."""
    return medpy_hd95(pred, gt, spacing=None)


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
    """Flat scalar metrics of a :func:`summarize_cases` result, for loggers and result tables.

    Keys: ``mean_dice``, ``mean_hd95``, ``dice_<class>`` and ``hd95_<class>``.
    """
    flat = {"mean_dice": float(summary["mean_dice"]), "mean_hd95": float(summary["mean_hd95"])}
    for name, vals in summary["per_class"].items():
        flat[f"dice_{name}"] = float(vals["dice"])
        flat[f"hd95_{name}"] = float(vals["hd95"])
    return flat


# --------------------------------------------------------------------------- #
# pixel-pooled binary convention (skin lesions)
# --------------------------------------------------------------------------- #
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
    :class:`BinaryConfusionAccumulator`.
    """
    return confusion_metrics_from_counts(**binary_confusion_counts(pred, gt))


class BinaryConfusionAccumulator:
    """Accumulates pixel counts over batches; :meth:`compute` gives the pooled metrics.

    >>> acc = BinaryConfusionAccumulator()
    >>> acc.update(np.array([1, 0]), np.array([1, 1]))
    >>> acc.compute()["sensitivity"]
    0.5
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, pred: Any, gt: Any) -> None:
        counts = binary_confusion_counts(pred, gt)
        self.tp += counts["tp"]
        self.fp += counts["fp"]
        self.fn += counts["fn"]
        self.tn += counts["tn"]

    def compute(self) -> dict[str, float]:
        return confusion_metrics_from_counts(self.tp, self.fp, self.fn, self.tn)
