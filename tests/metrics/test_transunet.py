"""TransUNet per-case rules: edge cases, per-class metrics against medpy, speed, summaries."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage

from lightning_modules.metrics import (
    case_dice_hd95,
    flatten_summary,
    medpy_hd95,
    per_class_case_metrics,
    summarize_cases,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, frac: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="constant")
    return noise > np.quantile(noise, 1.0 - frac)


def test_identical_masks_give_one_and_zero():
    rng = np.random.default_rng(3)
    m = _blob(rng, (12, 20, 20), 2.0, 0.3)
    assert case_dice_hd95(m, m) == (1.0, 0.0)
    assert case_dice_hd95(m.astype(np.float64) * 5, m.astype(np.uint8)) == (1.0, 0.0)


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


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    a = torch.zeros(8, 8, dtype=torch.long)
    b = torch.zeros(8, 8, dtype=torch.long)
    a[2, 2] = 1
    b[5, 6] = 1
    assert case_dice_hd95(a, b) == (0.0, pytest.approx(5.0))


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
    json.dumps(s)  # JSON-ready
    flat = flatten_summary(s)
    assert flat["dice_aorta"] == pytest.approx(80.0) and flat["hd95_gallbladder"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        summarize_cases(per_case, ["aorta"])
    with pytest.raises(ValueError):
        summarize_cases({}, ["aorta"])
