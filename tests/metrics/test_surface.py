"""medpy-convention Dice and pooled HD95 against medpy and hand-worked cases; surfaces; the exact bbox crop."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lightning_modules.metrics import (
    case_dice_hd95,
    crop_to_union,
    medpy_dice,
    medpy_hd95,
    medpy_hd95_voxel,
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


def test_dice_of_two_empty_masks_is_one():
    # medpy's intended rule (its ZeroDivisionError branch); with numpy 2 scalars medpy itself
    # returns NaN with a warning, so this is checked against the definition, not medpy.
    assert medpy_dice(np.zeros(5), np.zeros(5)) == 1.0


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
