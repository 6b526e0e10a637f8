"""The flat '/' keys: flatten_metrics, MetricReport (JSON round trip, columns), transunet_report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightning_modules.metrics import MetricReport, flatten_metrics, summarize_cases, transunet_report
from lightning_modules.metrics import transunet as transunet_module


# --------------------------------------------------------------------------- #
# flatten_metrics
# --------------------------------------------------------------------------- #
def test_flatten_metrics_nesting_prefix_and_order():
    nested = {
        "mean_dice": 80.0,
        "dice": {"aorta": 90.0, "liver": {"left": 1, "right": np.float32(0.5)}},
        "hd95": {"aorta": np.float64(3.25)},
        "count": np.int64(7),
        "loss": torch.tensor(0.125),
        "ok": True,
    }
    flat = flatten_metrics(nested, prefix="test")
    assert list(flat) == [
        "test/mean_dice",
        "test/dice/aorta",
        "test/dice/liver/left",
        "test/dice/liver/right",
        "test/hd95/aorta",
        "test/count",
        "test/loss",
        "test/ok",
    ]
    assert flat == {
        "test/mean_dice": 80.0,
        "test/dice/aorta": 90.0,
        "test/dice/liver/left": 1.0,
        "test/dice/liver/right": 0.5,
        "test/hd95/aorta": 3.25,
        "test/count": 7.0,
        "test/loss": 0.125,
        "test/ok": 1.0,
    }
    assert all(type(v) is float for v in flat.values())
    assert flatten_metrics({"mean_dice": 80.0, "dice": {"aorta": 90.0}}, prefix="test") == {
        "test/mean_dice": 80.0,
        "test/dice/aorta": 90.0,
    }
    # no prefix, another separator, 0-d arrays
    assert flatten_metrics({"a": {"b": np.array(2.0)}}) == {"a/b": 2.0}
    assert flatten_metrics({"a": {"b": 2}}, prefix="val", sep=".") == {"val.a.b": 2.0}
    assert flatten_metrics({}, prefix="test") == {}


def test_flatten_metrics_none_stays_none():
    flat = flatten_metrics({"mean_hd95": None, "hd95": {"aorta": None, "liver": 2.0}}, prefix="test")
    assert flat == {"test/mean_hd95": None, "test/hd95/aorta": None, "test/hd95/liver": 2.0}


@pytest.mark.parametrize(
    "leaf",
    ["90.0", [1.0, 2.0], (1.0,), np.array([1.0, 2.0]), torch.tensor([1.0, 2.0]), 1 + 2j, object()],
)
def test_flatten_metrics_rejects_non_numeric_leaves_naming_the_key(leaf):
    with pytest.raises(TypeError, match="'test/dice/aorta'"):
        flatten_metrics({"mean_dice": 1.0, "dice": {"aorta": leaf}}, prefix="test")


def test_flatten_metrics_rejects_colliding_keys():
    with pytest.raises(ValueError, match="'dice/aorta'"):
        flatten_metrics({"dice/aorta": 1.0, "dice": {"aorta": 2.0}})


# --------------------------------------------------------------------------- #
# MetricReport
# --------------------------------------------------------------------------- #
def _report() -> MetricReport:
    return MetricReport(
        metrics={"test/mean_dice": 80.0, "test/dice/aorta": np.float64(90.0), "test/mean_hd95": None},
        cases=[
            {"case": "case0001", "mean_dice": 70.0, "dice/aorta": 90.0},
            {"case": "case0002", "dice/aorta": 70.0, "hd95/aorta": 4.0, "mean_dice": 60.0},
            {"extra": 1.0, "case": "case0003"},
        ],
        meta={"protocol": "TransUNet", "class_names": ["aorta"], "dice_unit": "%"},
    )


def test_metric_report_json_round_trip():
    report = _report()
    assert type(report.metrics["test/dice/aorta"]) is float  # normalised on construction
    data = report.to_json()
    assert list(data) == ["metrics", "cases", "meta"]
    assert data["metrics"] == {"test/mean_dice": 80.0, "test/dice/aorta": 90.0, "test/mean_hd95": None}
    text = json.dumps(data)
    back = MetricReport.from_json(json.loads(text))
    assert back == report
    assert list(back.metrics) == list(report.metrics)
    assert MetricReport.from_json(text) == report
    # to_json hands out copies
    data["metrics"]["test/mean_dice"] = 0.0
    data["cases"][0]["mean_dice"] = 0.0
    assert report.metrics["test/mean_dice"] == 80.0 and report.cases[0]["mean_dice"] == 70.0
    # cases and meta may be absent
    assert MetricReport.from_json({"metrics": {"a": 1}}) == MetricReport(metrics={"a": 1.0}, cases=[])
    with pytest.raises(ValueError):
        MetricReport.from_json({"cases": []})


def test_metric_report_case_columns():
    assert _report().case_columns() == ["case", "mean_dice", "dice/aorta", "hd95/aorta", "extra"]
    assert MetricReport(metrics={}, cases=[]).case_columns() == ["case"]


# --------------------------------------------------------------------------- #
# transunet_report
# --------------------------------------------------------------------------- #
def _two_case_summary() -> dict:
    return {
        "mean_dice": 52.5,
        "mean_hd95": 4.0,
        "per_class": {"aorta": {"dice": 80.0, "hd95": 3.0}, "gallbladder": {"dice": 25.0, "hd95": 5.0}},
        "per_case": {
            "case0001": {
                "mean_dice": 70.0,
                "mean_hd95": 6.0,
                "dice": {"aorta": 90.0, "gallbladder": 50.0},
                "hd95": {"aorta": 2.0, "gallbladder": 10.0},
            },
            "case0002": {
                "mean_dice": 35.0,
                "mean_hd95": 2.0,
                "dice": {"aorta": 70.0, "gallbladder": 0.0},
                "hd95": {"aorta": 4.0, "gallbladder": 0.0},
            },
        },
        "num_cases": 2,
        "class_names": ["aorta", "gallbladder"],
        "dice_unit": "%",
        "hd95_unit": "voxels (or spacing units)",
    }


def test_transunet_report_on_a_hand_built_summary():
    report = transunet_report(_two_case_summary(), meta={"protocol": "TransUNet volumetric", "data": "synapse"})
    assert list(report.metrics.items()) == [
        ("test/mean_dice", 52.5),
        ("test/mean_hd95", 4.0),
        ("test/dice/aorta", 80.0),
        ("test/dice/gallbladder", 25.0),
        ("test/hd95/aorta", 3.0),
        ("test/hd95/gallbladder", 5.0),
    ]
    assert report.cases == [
        {
            "case": "case0001",
            "mean_dice": 70.0,
            "mean_hd95": 6.0,
            "dice/aorta": 90.0,
            "dice/gallbladder": 50.0,
            "hd95/aorta": 2.0,
            "hd95/gallbladder": 10.0,
        },
        {
            "case": "case0002",
            "mean_dice": 35.0,
            "mean_hd95": 2.0,
            "dice/aorta": 70.0,
            "dice/gallbladder": 0.0,
            "hd95/aorta": 4.0,
            "hd95/gallbladder": 0.0,
        },
    ]
    assert report.case_columns() == [
        "case", "mean_dice", "mean_hd95", "dice/aorta", "dice/gallbladder", "hd95/aorta", "hd95/gallbladder"
    ]
    assert report.meta == {
        "num_cases": 2,
        "class_names": ["aorta", "gallbladder"],
        "dice_unit": "%",
        "hd95_unit": "voxels (or spacing units)",
        "protocol": "TransUNet volumetric",
        "data": "synapse",
    }
    assert MetricReport.from_json(json.loads(json.dumps(report.to_json()))) == report
    # another prefix, no meta
    val = transunet_report(_two_case_summary(), prefix="val")
    assert list(val.metrics)[:2] == ["val/mean_dice", "val/mean_hd95"]
    assert val.meta["num_cases"] == 2 and "protocol" not in val.meta


def test_transunet_report_of_summarize_cases():
    per_case = {
        "case0001": np.array([[0.9, 2.0], [0.5, 10.0]]),
        "case0002": np.array([[0.7, 4.0], [0.0, 0.0]]),
    }
    report = transunet_report(summarize_cases(per_case, ["aorta", "gallbladder"]))
    expected = _two_case_summary()
    assert report.metrics == pytest.approx(transunet_report(expected).metrics)
    assert [row["case"] for row in report.cases] == ["case0001", "case0002"]
    assert report.cases[1]["dice/aorta"] == pytest.approx(70.0)
    assert transunet_module.transunet_report is transunet_report
