"""Pixel-pooled binary DSC/SE/SP/ACC: hand counts, pooling, zero division; the torchmetrics accumulator
against the numpy reference, on one process and synced over two (gloo)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric
from torchmetrics.classification import BinaryStatScores

from lightning_modules.metrics import (
    BinaryConfusionAccumulator,
    PooledBinaryMetrics,
    binary_confusion_counts,
    binary_confusion_metrics,
)


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


# --------------------------------------------------------------------------- #
# the torchmetrics accumulator
# --------------------------------------------------------------------------- #
def _random_batches(seed: int, n: int) -> list[tuple[object, object]]:
    """Binary batches of varied shapes, dtypes and containers (numpy / torch), nonzero = positive."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(1, 9, 1 + i % 4))
        p = rng.random(shape) < rng.uniform(0.05, 0.9)
        g = rng.random(shape) < rng.uniform(0.05, 0.9)
        kind = i % 5
        if kind == 0:
            batches.append((p, g))
        elif kind == 1:  # numpy, non-bool dtypes, values other than 1 are positive
            batches.append((p.astype(np.float32) * 0.3, g.astype(np.int64) * -2))
        elif kind == 2:  # torch bool / uint8
            batches.append((torch.from_numpy(p), torch.from_numpy(g.astype(np.uint8))))
        elif kind == 3:  # torch float (not thresholded at 0.5: 0.2 is positive) and long labels
            batches.append((torch.from_numpy(p.astype(np.float64) * 0.2), torch.from_numpy(g.astype(np.int64))))
        else:  # NaN is positive, as in medpy / numpy's bool conversion
            pf = np.where(p, np.nan, 0.0)
            batches.append((pf, g.astype(np.uint8)))
    return batches


def _concatenated(batches) -> tuple[np.ndarray, np.ndarray]:
    def flat(x):
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return x.astype(bool).reshape(-1)

    return np.concatenate([flat(p) for p, _ in batches]), np.concatenate([flat(g) for _, g in batches])


def test_accumulator_is_a_binary_stat_scores_metric():
    acc = PooledBinaryMetrics()
    assert BinaryConfusionAccumulator is PooledBinaryMetrics
    assert isinstance(acc, BinaryStatScores) and isinstance(acc, Metric)
    assert acc.multidim_average == "global"
    assert acc.tp.dtype == torch.long


@pytest.mark.parametrize("seed", range(3))
def test_accumulator_equals_numpy_reference_on_random_batches(seed):
    batches = _random_batches(seed, 25)
    acc = PooledBinaryMetrics()
    for p, g in batches:
        acc.update(p, g)
    pred, gt = _concatenated(batches)
    assert acc.counts() == binary_confusion_counts(pred, gt)
    got = acc.compute()
    assert list(got) == ["dice", "sensitivity", "specificity", "accuracy"]
    assert got == binary_confusion_metrics(pred, gt)  # exact: same integer counts, same formulas
    assert all(type(v) is float for v in got.values())
    acc.reset()
    assert acc.counts() == {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    acc.update(*batches[0])
    assert acc.compute() == binary_confusion_metrics(*batches[0])


def test_accumulator_zero_division_and_errors():
    empty, full = np.zeros((3, 3)), np.ones((3, 3))
    cases = [
        ((empty, empty), {"dice": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0}),
        ((full, full), {"dice": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0}),
        ((full, empty), {"dice": 0.0, "sensitivity": 1.0, "specificity": 0.0, "accuracy": 0.0}),
        ((empty, full), {"dice": 0.0, "sensitivity": 0.0, "specificity": 1.0, "accuracy": 0.0}),
    ]
    for (p, g), expected in cases:
        acc = PooledBinaryMetrics()
        acc.update(torch.from_numpy(p), g)
        assert acc.compute() == expected == binary_confusion_metrics(p, g)
    acc = PooledBinaryMetrics()
    acc.update(np.zeros((0, 4)), np.zeros((0, 4)))  # zero pixels: counted, but nothing to compute on
    with pytest.raises(ValueError, match="zero pixels"):
        acc.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns that compute() runs before update()
        with pytest.raises(ValueError, match="zero pixels"):
            PooledBinaryMetrics().compute()
    with pytest.raises(ValueError, match="same shape"):
        PooledBinaryMetrics().update(np.zeros((2, 3)), np.zeros((3, 2)))
    acc = PooledBinaryMetrics()
    acc.update(np.float32(0.25), np.array([1]))  # 0-d counts as one pixel; 0.25 is positive
    assert acc.counts() == {"tp": 1, "fp": 0, "fn": 0, "tn": 0}


def _rank_batches(rank: int) -> list[tuple[object, object]]:
    batches = _random_batches(123, 14)
    return batches[:9] if rank == 0 else batches[9:]  # uneven split


def _gloo_worker(rank: int, world_size: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", world_size=world_size, rank=rank)
    try:
        acc = PooledBinaryMetrics()
        for p, g in _rank_batches(rank):
            acc.update(p, g)
        local = acc.counts()
        synced = acc.compute()  # all-reduces the states
        Path(tmp, f"rank{rank}.json").write_text(json.dumps({"local": local, "synced": synced}))
    finally:
        dist.destroy_process_group()


def test_accumulator_syncs_over_two_gloo_processes(tmp_path):
    mp.spawn(_gloo_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one_process = PooledBinaryMetrics()
    for r in range(2):
        for p, g in _rank_batches(r):
            one_process.update(p, g)
    expected = one_process.compute()
    for res in results:
        assert res["synced"] == expected  # exactly, on every rank
    summed = {k: results[0]["local"][k] + results[1]["local"][k] for k in ("tp", "fp", "fn", "tn")}
    assert summed == one_process.counts()
    assert results[0]["local"] != summed  # each rank held only its part before the sync
