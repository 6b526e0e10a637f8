"""Metrics: medpy-convention Dice/HD95 against medpy and hand-worked cases; pixel-pooled skin metrics."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from lightning_modules.metrics import (
    BinaryConfusionAccumulator,
    binary_confusion_counts,
    binary_confusion_metrics,
    case_dice_hd95,
    crop_to_union,
    flatten_summary,
    medpy_dice,
    medpy_hd95,
    medpy_hd95_voxel,
    per_class_case_metrics,
    summarize_cases,
    surface_voxels,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")

METHODS = ("auto", "edt", "kdtree")


# --------------------------------------------------------------------------- #
# random test volumes
# --------------------------------------------------------------------------- #
def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, frac: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="constant")
    return noise > np.quantile(noise, 1.0 - frac)


def _random_pair(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
    ndim = (2, 3, 3, 1)[i % 4]
    shape = tuple(int(s) for s in rng.integers(1 if ndim == 3 else 2, (40, 64, 25)[ndim - 1] + 1, ndim))
    kind = i % 5
    if kind == 0:  # random noise
        a = rng.random(shape) < rng.uniform(0.05, 0.6)
        b = rng.random(shape) < rng.uniform(0.05, 0.6)
    elif kind == 1:  # smooth blobs
        a = _blob(rng, shape, 1.5, rng.uniform(0.05, 0.5))
        b = _blob(rng, shape, 1.5, rng.uniform(0.05, 0.5))
    elif kind == 2:  # blob vs slightly shifted copy (realistic prediction)
        a = _blob(rng, shape, 2.0, 0.3)
        b = np.roll(a, 1, axis=0) | (rng.random(shape) < 0.01)
    elif kind == 3:  # tiny objects: single voxels
        a = np.zeros(shape, bool)
        b = np.zeros(shape, bool)
        a[tuple(rng.integers(0, s) for s in shape)] = True
        b[tuple(rng.integers(0, s) for s in shape)] = True
        if rng.random() < 0.5:
            b[tuple(rng.integers(0, s) for s in shape)] = True
    else:  # objects touching the volume border
        a = np.zeros(shape, bool)
        b = np.zeros(shape, bool)
        a[(slice(0, max(1, shape[0] // 2)),) + (slice(None),) * (len(shape) - 1)] = True
        b[..., -max(1, shape[-1] // 3):] = True
        b &= rng.random(shape) < 0.9
    if not a.any():
        a.flat[0] = True
    if not b.any():
        b.flat[-1] = True
    return a, b


def _random_spacing(rng: np.random.Generator, i: int, ndim: int):
    choice = i % 3
    if choice == 0:
        return None
    if choice == 1:
        return float(rng.uniform(0.3, 3.0))  # scalar for every axis
    return tuple(float(s) for s in rng.uniform(0.3, 3.0, ndim))


@pytest.mark.parametrize("chunk", range(4))
def test_hd95_and_dice_match_medpy_on_random_volumes(chunk):
    rng = np.random.default_rng(1000 + chunk)
    for i in range(40):
        a, b = _random_pair(rng, i + chunk)
        spacing = _random_spacing(rng, i, a.ndim)
        # vary dtypes: nonzero = foreground
        a_in = a.astype((np.uint8, np.float32, np.int64, bool)[i % 4]) * (1, 3, -2, 1)[i % 4]
        ref_hd = medpy_binary.hd95(a_in, b, voxelspacing=spacing)
        ref_dc = medpy_binary.dc(a_in, b)
        for method in METHODS:
            got = medpy_hd95(a_in, b, spacing, method=method)
            assert got == pytest.approx(ref_hd, rel=1e-12, abs=1e-12), (i, method, a.shape, spacing)
        assert medpy_dice(a_in, b) == pytest.approx(ref_dc, rel=1e-15, abs=0)
        dice, hd = case_dice_hd95(a_in, b, spacing)
        assert dice == pytest.approx(ref_dc, rel=1e-15, abs=0)
        assert hd == pytest.approx(ref_hd, rel=1e-12, abs=1e-12)


def test_hd95_is_symmetric_and_unit_spacing_equals_none():
    rng = np.random.default_rng(7)
    a = _blob(rng, (20, 30, 25), 2.0, 0.2)
    b = _blob(rng, (20, 30, 25), 2.0, 0.2)
    assert medpy_hd95(a, b) == medpy_hd95(b, a)
    assert medpy_hd95(a, b) == medpy_hd95(a, b, spacing=1.0) == medpy_hd95(a, b, spacing=(1, 1, 1))
    assert medpy_hd95_voxel(a, b) == medpy_hd95(a, b)


# --------------------------------------------------------------------------- #
# hand-worked cases
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_two_single_voxels(method):
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1, 2] = True
    b[4, 6] = True  # offset (3, 4): distance 5 in both directions
    assert medpy_hd95(a, b, method=method) == pytest.approx(5.0)
    assert medpy_hd95(a, b, spacing=(2.0, 1.0), method=method) == pytest.approx(np.sqrt(6.0**2 + 4.0**2))
    assert case_dice_hd95(a, b) == (0.0, pytest.approx(5.0))
    a3 = np.zeros((5, 6, 7), bool)
    b3 = np.zeros((5, 6, 7), bool)
    a3[0, 0, 0] = True
    b3[2, 3, 6] = True  # sqrt(4 + 9 + 36) = 7
    assert medpy_hd95(a3, b3, method=method) == pytest.approx(7.0)


def test_identical_masks_give_one_and_zero():
    rng = np.random.default_rng(3)
    m = _blob(rng, (12, 20, 20), 2.0, 0.3)
    assert case_dice_hd95(m, m) == (1.0, 0.0)
    assert case_dice_hd95(m.astype(np.float64) * 5, m.astype(np.uint8)) == (1.0, 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_pooling_both_directions_before_the_percentile(method):
    # gt: voxel 0; pred: voxels 0 and 10 (1-D). Distances pred->gt = [0, 10], gt->pred = [0].
    # medpy pools them: percentile([0, 10, 0], 95) = 0 + 0.9 * 10 = 9.0
    # (MONAI's per-direction rule would give max(9.5, 0) = 9.5).
    gt = np.zeros(12, bool)
    pred = np.zeros(12, bool)
    gt[0] = True
    pred[[0, 10]] = True
    assert medpy_hd95(pred, gt, method=method) == pytest.approx(9.0)
    assert medpy_dice(pred, gt) == pytest.approx(2 / 3)
    assert medpy_binary.hd95(pred, gt) == pytest.approx(9.0)


def test_surface_of_a_filled_square_and_border_handling():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True  # 4x4 square: 12 boundary pixels, 4 interior
    assert surface_voxels(m).sum() == 12
    full = np.ones((4, 5), bool)  # outside the array counts as background
    assert surface_voxels(full).sum() == 4 * 5 - 2 * 3
    assert surface_voxels(np.ones((1, 7), bool)).all()


def test_surface_equals_scipy_erosion_definition():
    rng = np.random.default_rng(11)
    structure_cache = {}
    for i in range(60):
        ndim = 1 + i % 3
        shape = tuple(int(s) for s in rng.integers(1, 12, ndim))
        m = rng.random(shape) < rng.uniform(0.2, 0.95)
        st = structure_cache.setdefault(ndim, ndimage.generate_binary_structure(ndim, 1))
        expected = m ^ ndimage.binary_erosion(m, structure=st, iterations=1)
        np.testing.assert_array_equal(surface_voxels(m), expected)


# --------------------------------------------------------------------------- #
# the TransUNet edge rules
# --------------------------------------------------------------------------- #
def test_edge_rules():
    some = np.zeros((4, 5, 6), np.uint8)
    some[1, 2, 3] = 1
    empty = np.zeros((4, 5, 6), np.uint8)
    assert case_dice_hd95(some, empty) == (1.0, 0.0)  # FP only: (1, 0)
    assert case_dice_hd95(empty, some) == (0.0, 0.0)  # missed: (0, 0)
    assert case_dice_hd95(empty, empty) == (0.0, 0.0)  # both empty: (0, 0)
    assert case_dice_hd95(some, some) == (1.0, 0.0)
    with pytest.raises(ValueError):
        medpy_hd95(empty, some)
    with pytest.raises(ValueError):
        medpy_hd95(some, empty)
    with pytest.raises(ValueError):
        case_dice_hd95(some, np.zeros((4, 5, 7)))


def test_dice_of_two_empty_masks_is_one():
    # medpy's intended rule (its ZeroDivisionError branch); with numpy 2 scalars medpy itself
    # returns NaN with a warning, so this is checked against the definition, not medpy.
    assert medpy_dice(np.zeros(5), np.zeros(5)) == 1.0


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    a = torch.zeros(8, 8, dtype=torch.long)
    b = torch.zeros(8, 8, dtype=torch.long)
    a[2, 2] = 1
    b[5, 6] = 1
    assert case_dice_hd95(a, b) == (0.0, pytest.approx(5.0))


# --------------------------------------------------------------------------- #
# bounding-box crop is exact
# --------------------------------------------------------------------------- #
def _uncropped_reference_hd95(a: np.ndarray, b: np.ndarray, spacing=None) -> float:
    """The definition evaluated on the full volume (no cropping), with scipy's erosion and EDT."""
    st = ndimage.generate_binary_structure(a.ndim, 1)
    sa = a ^ ndimage.binary_erosion(a, structure=st, iterations=1)
    sb = b ^ ndimage.binary_erosion(b, structure=st, iterations=1)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(np.percentile(np.hstack((d_ab, d_ba)), 95))


def test_bbox_crop_is_exact():
    rng = np.random.default_rng(5)
    for i in range(12):
        small_a = _blob(rng, (8, 10, 9), 1.2, 0.3)
        small_b = np.roll(small_a, 1, axis=i % 3) | (rng.random(small_a.shape) < 0.05)
        big_a = np.zeros((30, 40, 35), bool)
        big_b = np.zeros((30, 40, 35), bool)
        # place off-centre, sometimes touching the volume border
        off = (0, 5, 26) if i % 2 else (11, 17, 3)
        sl = tuple(slice(o, o + s) for o, s in zip(off, small_a.shape, strict=True))
        big_a[sl] = small_a
        big_b[sl] = small_b
        spacing = None if i % 3 else (2.5, 0.7, 1.1)
        reference = _uncropped_reference_hd95(big_a, big_b, spacing)
        for method in METHODS:
            assert medpy_hd95(big_a, big_b, spacing, method=method) == pytest.approx(reference, rel=1e-12)
        # the cropped view alone gives the same answer
        ca, cb = crop_to_union(big_a, big_b, margin=1)
        assert ca.size < big_a.size
        assert _uncropped_reference_hd95(ca, cb, spacing) == pytest.approx(reference, rel=1e-12)
        assert medpy_dice(ca, cb) == medpy_dice(big_a, big_b)


def test_full_size_synapse_volume_is_fast():
    shape = (148, 512, 512)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    # a liver-sized ellipsoid and a shifted, slightly noisy prediction
    gt = ((z - 70) / 55.0) ** 2 + ((y - 250) / 110.0) ** 2 + ((x - 200) / 100.0) ** 2 < 1
    pred = np.roll(gt, (2, 3, -4), axis=(0, 1, 2))
    pred[100, 400, 400] = True  # a far false positive
    case_dice_hd95(pred[:4], gt[:4])  # warm-up
    t0 = time.perf_counter()
    dice, hd = case_dice_hd95(pred, gt)
    elapsed = time.perf_counter() - t0
    assert 0.5 < dice < 1.0 and hd > 0
    assert elapsed < 1.0, f"case_dice_hd95 on a 148x512x512 volume took {elapsed:.2f} s"


# --------------------------------------------------------------------------- #
# per-class and summaries
# --------------------------------------------------------------------------- #
def _reference_case(pred, gt, c, spacing=None):
    p, g = pred == c, gt == c
    if p.any() and g.any():
        return medpy_binary.dc(p, g), medpy_binary.hd95(p, g, voxelspacing=spacing)
    if p.any():
        return 1.0, 0.0
    return 0.0, 0.0


@pytest.mark.parametrize("spacing", [None, (3.0, 0.8, 0.8)])
def test_per_class_case_metrics_against_medpy(spacing):
    rng = np.random.default_rng(21)
    shape = (12, 40, 36)
    gt = np.zeros(shape, np.int64)
    for c in range(1, 5):
        gt[_blob(rng, shape, 2.0, 0.08)] = c
    pred = np.roll(gt, 1, axis=1)
    pred[rng.random(shape) < 0.002] = 3
    pred[pred == 4] = 0  # class 4 missed entirely -> (0, 0)
    pred[0, 0, 0] = 5  # class 5: FP only -> (1, 0)
    out = per_class_case_metrics(pred, gt, num_classes=7, spacing=spacing)  # class 6: absent everywhere
    assert out.shape == (6, 2)
    for c in range(1, 7):
        np.testing.assert_allclose(out[c - 1], _reference_case(pred, gt, c, spacing), rtol=1e-12, atol=1e-12)
    assert tuple(out[3]) == (0.0, 0.0) and tuple(out[4]) == (1.0, 0.0) and tuple(out[5]) == (0.0, 0.0)
    # float and unsigned label volumes give the same answer
    np.testing.assert_array_equal(
        per_class_case_metrics(pred.astype(np.float32), gt.astype(np.uint8), 7, spacing), out
    )


def test_per_class_case_metrics_rejects_bad_labels():
    gt = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match="num_classes"):
        per_class_case_metrics(np.full((4, 4), 3), gt, num_classes=3)
    with pytest.raises(ValueError):
        per_class_case_metrics(np.full((4, 4), 0.5), gt, num_classes=3)
    with pytest.raises(ValueError):
        per_class_case_metrics(np.zeros((4, 5)), gt, num_classes=3)


def test_summarize_cases_keys_and_averaging():
    per_case = {
        "case0001": np.array([[0.9, 2.0], [0.5, 10.0]]),
        "case0002": np.array([[0.7, 4.0], [0.0, 0.0]]),
    }
    s = summarize_cases(per_case, ["aorta", "gallbladder"])
    assert set(s) >= {"mean_dice", "mean_hd95", "per_class", "per_case", "num_cases", "class_names"}
    assert s["per_class"]["aorta"]["dice"] == pytest.approx(80.0)
    assert s["per_class"]["aorta"]["hd95"] == pytest.approx(3.0)
    assert s["per_class"]["gallbladder"]["dice"] == pytest.approx(25.0)
    assert s["per_class"]["gallbladder"]["hd95"] == pytest.approx(5.0)
    assert s["mean_dice"] == pytest.approx((80.0 + 25.0) / 2)
    assert s["mean_hd95"] == pytest.approx((3.0 + 5.0) / 2)
    assert s["per_case"]["case0001"]["mean_dice"] == pytest.approx(70.0)
    assert s["per_case"]["case0002"]["dice"]["aorta"] == pytest.approx(70.0)
    assert s["per_case"]["case0002"]["hd95"]["gallbladder"] == 0.0
    assert s["num_cases"] == 2 and s["class_names"] == ["aorta", "gallbladder"]
    import json

    json.dumps(s)  # JSON-ready
    flat = flatten_summary(s)
    assert flat["dice_aorta"] == pytest.approx(80.0) and flat["hd95_gallbladder"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        summarize_cases(per_case, ["aorta"])
    with pytest.raises(ValueError):
        summarize_cases({}, ["aorta"])


# --------------------------------------------------------------------------- #
# pixel-pooled binary metrics
# --------------------------------------------------------------------------- #
def test_binary_confusion_metrics_hand_counts():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    gt = np.array([[1, 0, 1, 0], [1, 0, 0, 0]])
    # TP = 2, FP = 1, FN = 1, TN = 4
    assert binary_confusion_counts(pred, gt) == {"tp": 2, "fp": 1, "fn": 1, "tn": 4}
    m = binary_confusion_metrics(pred, gt)
    assert m["dice"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(6 / 8)


def test_binary_confusion_metrics_pool_over_images():
    rng = np.random.default_rng(0)
    preds = rng.random((5, 16, 16)) < 0.4
    gts = rng.random((5, 16, 16)) < 0.3
    acc = BinaryConfusionAccumulator()
    for p, g in zip(preds, gts, strict=True):
        acc.update(p, g)
    pooled = binary_confusion_metrics(preds, gts)
    assert acc.compute() == pytest.approx(pooled)
    tp = np.sum(preds & gts)
    fp = np.sum(preds & ~gts)
    fn = np.sum(~preds & gts)
    assert pooled["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # pooled is not the mean of per-image Dice
    per_image = np.mean([binary_confusion_metrics(p, g)["dice"] for p, g in zip(preds, gts, strict=True)])
    assert pooled["dice"] != pytest.approx(per_image, abs=1e-9)


def test_binary_confusion_metrics_zero_division():
    empty = np.zeros((3, 3))
    m = binary_confusion_metrics(empty, empty)  # no positives anywhere: DSC and SE are 0/0 -> 1.0
    assert m == {"dice": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0}
    full = np.ones((3, 3))
    m = binary_confusion_metrics(full, full)  # no negatives: SP is 0/0 -> 1.0
    assert m["specificity"] == 1.0 and m["dice"] == 1.0
    m = binary_confusion_metrics(full, empty)  # all FP
    assert m["dice"] == 0.0 and m["specificity"] == 0.0 and m["sensitivity"] == 1.0 and m["accuracy"] == 0.0
    with pytest.raises(ValueError):
        binary_confusion_metrics(np.zeros(0), np.zeros(0))
