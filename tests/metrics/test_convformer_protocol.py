"""The ConvFormer protocol on hand-worked masks, and exactly equal on 1 and 2 processes (gloo)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.distributed import gather_cases
from lightning_modules.metrics import (
    case_scores,
    class_counts,
    convformer_report,
    image_record,
    mean_foreground_dice,
    normalize_eval_mode,
    row_hausdorff_l1,
    slice_hd95,
)

E6, S4, S5 = 1e-6, 1e-4, 1e-5

# ------------------------------------------------------------------ patient mode, by hand (3 classes, 2×3 images)
# patient 0001: two slices; patient 0002: one slice. Class 2 is absent from both masks of patient 0001.
PATIENT_IMAGES = {
    "0001_s0": ([[1, 0, 0], [0, 0, 0]], [[1, 1, 0], [0, 0, 0]]),  # (pred, gt); class 1: tp1 fp0 fn1 tn4
    "0001_s1": ([[0, 0, 0], [1, 1, 0]], [[0, 0, 0], [1, 0, 0]]),  # class 1: tp1 fp1 fn0 tn4
    "0002_s0": ([[2, 0, 0], [0, 0, 1]], [[2, 2, 0], [0, 0, 0]]),  # class 1: tp0 fp1 fn0 tn5; class 2: tp1 fp0 fn1 tn4
}


def _records(images, num_classes=3, distances=True):
    return {name: image_record(np.array(p), np.array(g), num_classes, image_id=name, distances=distances)
            for name, (p, g) in images.items()}


def test_class_counts_by_hand():
    pred, gt = np.array(PATIENT_IMAGES["0002_s0"][0]), np.array(PATIENT_IMAGES["0002_s0"][1])
    counts = class_counts(pred, gt, 3)
    assert counts.dtype == np.int64
    assert counts.tolist() == [[0, 1, 0, 5], [1, 0, 1, 4]]  # rows: classes 1, 2; columns: tp, fp, fn, tn


def test_patient_mode_sums_per_patient_and_scores_empty_empty_zero():
    cases = case_scores(_records(PATIENT_IMAGES), "patient")
    assert list(cases) == ["0001", "0002"]
    assert cases["0001"]["num_images"] == 2
    # patient 0001, class 1 summed: tp2 fp1 fn1 tn8; class 2: nothing anywhere → Dice 0
    np.testing.assert_array_equal(cases["0001"]["dice"], [4 / (6 + E6), 0.0])
    np.testing.assert_array_equal(cases["0002"]["dice"], [0.0, 2 / (3 + E6)])
    np.testing.assert_allclose(cases["0001"]["iou"], [(2 + S4) / (4 + S4), 1.0], rtol=1e-15)
    np.testing.assert_allclose(cases["0002"]["iou"], [S4 / (1 + S4), (1 + S4) / (2 + S4)], rtol=1e-15)
    np.testing.assert_allclose(cases["0001"]["acc"], [(10 + S4) / (12 + S4), 1.0], rtol=1e-15)
    np.testing.assert_allclose(cases["0002"]["acc"], [(5 + S4) / (6 + S4), (5 + S4) / (6 + S4)], rtol=1e-15)
    np.testing.assert_allclose(cases["0001"]["se"], [(2 + S4) / (3 + S4), 1.0], rtol=1e-15)
    np.testing.assert_allclose(cases["0002"]["se"], [1.0, (1 + S4) / (2 + S4)], rtol=1e-15)
    np.testing.assert_allclose(cases["0001"]["sp"], [(8 + S4) / (9 + S4), 1.0], rtol=1e-15)
    np.testing.assert_allclose(cases["0002"]["sp"], [(5 + S4) / (6 + S4), 1.0], rtol=1e-15)
    # mean over patients per class, then over the foreground classes
    expected = np.mean([np.mean([4 / (6 + E6), 0.0]), np.mean([0.0, 2 / (3 + E6)])])
    assert mean_foreground_dice(_records(PATIENT_IMAGES, distances=False), "patient") == pytest.approx(expected,
                                                                                                     rel=1e-15)


def test_patient_mode_report_keys_units_and_rows():
    report = convformer_report(_records(PATIENT_IMAGES), "patient", ["RV", "LV"], meta={"data_kind": "synthetic"})
    m = report.metrics
    assert m["test/dice/RV"] == pytest.approx(100 * np.mean([4 / (6 + E6), 0.0]), rel=1e-14)
    assert m["test/dice/LV"] == pytest.approx(100 * np.mean([0.0, 2 / (3 + E6)]), rel=1e-14)
    assert m["test/dice"] == pytest.approx((m["test/dice/RV"] + m["test/dice/LV"]) / 2, rel=1e-14)
    assert m["test/iou/LV"] == pytest.approx(100 * np.mean([1.0, (1 + S4) / (2 + S4)]), rel=1e-14)
    # the release's HD per patient = max over slices: RV 1 (0001), 1 (0002); LV 0 (both empty), 1
    assert (m["test/row_hausdorff_l1/RV"], m["test/row_hausdorff_l1/LV"], m["test/row_hausdorff_l1"]) == (1, .5, .75)
    # HD95 (2-D, pixels): RV of 0001 = max(0.9, 0.9); 0002: gt of RV empty → 0; LV of 0002 = 0.9
    assert m["test/hd95/RV"] == pytest.approx(0.45) and m["test/hd95/LV"] == pytest.approx(0.45)
    for score in ("dice", "iou", "acc", "se", "sp", "row_hausdorff_l1", "hd95"):
        assert f"test/{score}" in m and f"test/{score}/RV" in m and f"test/{score}/LV" in m
    assert [row["case"] for row in report.cases] == ["0001", "0002"]
    assert report.cases[0]["num_images"] == 2 and report.cases[0]["dice/LV"] == 0.0
    assert report.meta["units"]["dice"] == "%" and report.meta["units"]["hd95"] == "pixels"
    assert report.meta["num_cases"] == 2 and report.meta["num_images"] == 3
    assert report.meta["data_kind"] == "synthetic" and report.meta["eval_mode"] == "patient"


# ------------------------------------------------------------------ image mode (ISIC), by hand
def test_image_mode_per_image_with_empty_empty_one():
    images = {"isic_b": ([[0, 0], [0, 0]], [[0, 0], [0, 0]]),  # both empty: every score 1
              "isic_a": ([[1, 0], [0, 0]], [[1, 1], [0, 0]])}  # tp1 fp0 fn1 tn2
    records = _records(images, num_classes=2)
    cases = case_scores(records, "image")
    assert list(cases) == ["isic_a", "isic_b"]
    np.testing.assert_allclose(cases["isic_a"]["dice"], [(2 + S5) / (3 + S5)], rtol=1e-15)
    for score in ("dice", "iou", "acc", "se", "sp"):
        assert cases["isic_b"][score].tolist() == [1.0]
    np.testing.assert_allclose(cases["isic_a"]["iou"], [(1 + S5) / (2 + S5)], rtol=1e-15)
    np.testing.assert_allclose(cases["isic_a"]["acc"], [(3 + S5) / (4 + S5)], rtol=1e-15)
    np.testing.assert_allclose(cases["isic_a"]["se"], [(1 + S5) / (2 + S5)], rtol=1e-15)
    assert cases["isic_a"]["sp"].tolist() == [1.0]
    report = convformer_report(records, "slice", ["lesion"])  # the release's name of the mode
    assert report.metrics["test/dice"] == pytest.approx(50 * ((2 + S5) / (3 + S5) + 1), rel=1e-14)
    assert report.metrics["test/row_hausdorff_l1"] == 0.5  # isic_a: rows [1,0] vs [1,1] → 1; isic_b: 0
    assert [row["case"] for row in report.cases] == ["isic_a", "isic_b"]
    assert normalize_eval_mode("slice") == "image"
    with pytest.raises(ValueError, match="eval_mode"):
        normalize_eval_mode("volume")


# ------------------------------------------------------------------ distances, by hand
def _row_hausdorff_loops(a, b):
    """Literal definition: every row a point, L1 metric, both directed distances."""
    def directed(x, y):
        return max(min(sum(abs(int(u) - int(v)) for u, v in zip(p, q, strict=True)) for q in y) for p in x)
    return float(max(directed(a, b), directed(b, a)))


def test_row_hausdorff_l1_by_hand():
    pred = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    gt = np.array([[0, 0, 0, 0], [1, 0, 0, 0]])
    # pred rows → nearest gt row: 2, 3; gt rows → nearest pred row: 3, 2
    assert row_hausdorff_l1(pred, gt) == 3.0
    assert row_hausdorff_l1(pred * 255, gt.astype(bool)) == 3.0  # binary: nonzero is 1
    empty = np.zeros((2, 4), int)
    assert row_hausdorff_l1(empty, empty) == 0.0
    # an empty mask is H zero rows: the distance is the other mask's largest row count ...
    assert row_hausdorff_l1(empty, np.array([[1, 1, 0, 0], [1, 1, 1, 0]])) == 3.0
    # ... whichever side is empty, also when the other has a zero row
    assert row_hausdorff_l1(np.array([[0, 0, 0, 0], [1, 1, 1, 0]]), empty) == 3.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((2, 5, 6)) < rng.random()
        assert row_hausdorff_l1(a, b) == _row_hausdorff_loops(a, b)
    with pytest.raises(ValueError, match="masks"):
        row_hausdorff_l1(np.zeros((2, 3)), np.zeros((3, 2)))


def test_slice_hd95_by_hand():
    pred = np.zeros((3, 4), int)
    gt = np.zeros((3, 4), int)
    pred[0, 0], gt[0, 3] = 1, 1
    assert slice_hd95(pred, gt) == 3.0  # one surface pixel each, 3 apart
    assert slice_hd95(pred, np.zeros_like(gt)) == 0.0 and slice_hd95(np.zeros_like(pred), gt) == 0.0
    # two pixels against one: pooled distances [0 | 0, 1], 95th percentile with linear interpolation
    assert slice_hd95(np.array([[1, 0, 0]]), np.array([[1, 1, 0]])) == pytest.approx(0.9)


def test_distances_per_patient_are_the_maximum_over_slices():
    images = {"0003_a": ([[1, 0, 0, 0]], [[0, 0, 0, 1]]),  # row distance 2, HD95 3
              "0003_b": ([[1, 1, 1, 0]], [[1, 0, 0, 0]])}  # row distance 2, HD95 pooled [0, 1, 2 | 0]
    records = _records(images, num_classes=2)
    cases = case_scores(records, "patient")
    assert cases["0003"]["row_hausdorff_l1"].tolist() == [2.0]
    assert cases["0003"]["hd95"].tolist() == [max(records["0003_a"]["hd95"][0], records["0003_b"]["hd95"][0])]
    assert records["0003_a"]["hd95"].tolist() == [3.0]


# ------------------------------------------------------------------ exact on 1 and 2 processes
def _random_images(n: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    names = [f"{1 + i % 3:04d}_slice{i:02d}" for i in range(n)]  # 3 patients
    return {name: (rng.integers(0, 3, (8, 8)), rng.integers(0, 3, (8, 8))) for name in names}


def _shard(names: list[str], rank: int, world: int) -> list[str]:
    """DistributedSampler(shuffle=False): pad by repeating from the start, then every world-th item."""
    padded = names + names[: (-len(names)) % world]
    return padded[rank::world]


SCENARIOS = [(7, "patient"), (7, "image"), (1, "patient")]  # odd counts; fewer images than processes


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for i, (n, mode) in enumerate(SCENARIOS):
            images = _random_images(n)
            local = _records({k: images[k] for k in _shard(sorted(images), rank, world)})
            report = convformer_report(gather_cases(local), mode, ["a", "b"])
            with open(f"{out}.{i}.{rank}.json", "w") as f:
                json.dump(report.to_json(), f)
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(tmp_path):
    out = str(tmp_path / "report")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)  # one start-up for all
    for i, (n, mode) in enumerate(SCENARIOS):
        one = convformer_report(_records(_random_images(n)), mode, ["a", "b"]).to_json()
        assert len(one["cases"]) == (min(n, 3) if mode == "patient" else n)
        for rank in (0, 1):
            two = json.loads((tmp_path / f"report.{i}.{rank}.json").read_text())
            assert two["metrics"] == one["metrics"], (n, mode)  # exactly
            assert two["cases"] == one["cases"], (n, mode)
