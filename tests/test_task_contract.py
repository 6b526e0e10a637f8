"""The table runner, results and render know no task: a toy classification table runs through them unchanged."""
from __future__ import annotations

import json

import pytest

from ablations.framework import runner
from ablations.framework.render import render_file


@pytest.fixture()
def toy_table():
    from tests.toy_task.table import TABLE

    return TABLE


def _run(table, tmp_path, *extra):
    return runner.main(table, ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "results"),
                               "--seeds", "2", *extra])


def test_a_classification_table_runs_through_the_unchanged_runner(toy_table, tmp_path, capsys):
    json_path = _run(toy_table, tmp_path)
    assert json_path == tmp_path / "results" / "toy" / "table1_width.quick-synthetic.json"
    results = json.loads(json_path.read_text())
    assert [m["name"] for m in results["metrics"]] == ["test/top1", "params_m", "gmacs"]
    w16 = results["variants"][1]
    assert [r["seed"] for r in w16["runs"]] == [3, 4]
    assert 0.0 <= w16["mean"]["test/top1"] <= 100.0
    assert w16["delta"]["test/top1"] == pytest.approx(w16["mean"]["test/top1"] - 90.0)
    # complexity from the registry's input size (8,): 8·16 + 16·3 MACs
    assert w16["runs"][0]["metrics"]["gmacs"] == pytest.approx((8 * 16 + 16 * 3) / 1e9)
    assert w16["runs"][0]["metrics"]["params_m"] == pytest.approx((8 * 16 + 16 + 16 * 3 + 3) / 1e6)
    assert render_file(json_path) == json_path.with_suffix(".md").read_text()
    assert results["machine"]["cpu"] and "- Machine: " in json_path.with_suffix(".md").read_text()
    assert json_path.with_suffix(".png").is_file()
    # each run's folder: its overrides, its checkpoint and its finished-run record
    run_dir = tmp_path / "runs" / "toy" / "table1_width-quick-synthetic" / "w16-s3"
    record = json.loads((run_dir / "record.json").read_text())
    assert record["metrics"] == w16["runs"][0]["metrics"]
    assert (run_dir / "overrides.yaml").is_file()


def test_an_interrupted_table_continues_with_the_missing_runs_only(toy_table, tmp_path, capsys):
    _run(toy_table, tmp_path, "--only", "w4")
    first = json.loads((tmp_path / "runs" / "toy" / "table1_width-quick-synthetic" / "w4-s3" / "record.json")
                       .read_text())
    capsys.readouterr()
    json_path = _run(toy_table, tmp_path)
    out = capsys.readouterr().out
    assert out.count("reused a finished run") == 2  # w4 with seeds 3 and 4
    results = json.loads(json_path.read_text())
    assert results["variants"][0]["runs"][0]["metrics"] == first["metrics"]
    assert "2 finished run(s) of an interrupted invocation reused" in results["notes"][-1]
    total = sum(r["metrics"]["train_test_seconds"] for v in results["variants"] for r in v["runs"])
    assert f"sum to {total:.0f} s" in results["notes"][-1]  # the reused runs' time is not lost
    _run(toy_table, tmp_path, "--restart", "--only", "w4")
    assert "reused" not in capsys.readouterr().out


def test_wandb_offline_files_hold_the_config_the_cases_and_the_artifacts(toy_table, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # forget the settings of earlier (disabled) runs in this process
    monkeypatch.setenv("WANDB_MODE", "offline")
    runner.main(toy_table, ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "results"),
                            "--seeds", "1", "--only", "w16"])
    root = tmp_path / "runs" / "toy" / "table1_width-quick-synthetic"
    (run_file,) = (root / "w16-s3" / "wandb").glob("offline-run-*/run-*.wandb")
    run = run_file.read_bytes()
    assert b'"hidden":16' in run and b'"lr":0.05' in run  # the net's and optimizer's knobs in the config
    assert list((root / "w16-s3" / "wandb").glob("offline-run-*/files/media/table/test/cases_*.table.json"))
    (summary_file,) = (root / "wandb").glob("offline-run-*/run-*.wandb")
    summary = summary_file.read_bytes()
    for name in (b"table1_width-summary-results", b"table1_width-summary-checkpoints",
                 b"table1_width.quick-synthetic.json", b"w16-s3.ckpt"):
        assert name in summary
    wandb.teardown()


def test_a_table_reports_the_best_and_the_last_checkpoint_and_draws_its_extra_figure(tmp_path, capsys):
    from tests.toy_task.table import BEST_AND_LAST

    json_path = runner.main(BEST_AND_LAST, ["--runs-dir", str(tmp_path / "runs"), "--out-dir",
                                            str(tmp_path / "results"), "--seeds", "1"])
    results = json.loads(json_path.read_text())
    metrics = results["variants"][0]["runs"][0]["metrics"]
    assert {"test/top1", "last/test/top1"} <= set(metrics)
    assert results["plots"] == {"runs": "tests.toy_task.table:plot_runs"}
    assert json_path.with_name(json_path.stem + ".runs.png").stat().st_size > 0
    assert "`<this file's stem>.runs.png`" in json_path.with_suffix(".md").read_text()
    # the best checkpoint is the monitored callback's, and it is really what was tested
    run_dir = tmp_path / "runs" / "toy" / "table2_width_best-quick-synthetic" / "w4-s3"
    best = [p for p in run_dir.rglob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1


def test_best_checkpoint_without_a_monitored_callback_is_a_clear_error(toy_table, tmp_path):
    import dataclasses

    table = dataclasses.replace(toy_table, test_checkpoints=("best",), number=3, subject="no_monitor",
                                script="table3_toy_no_monitor")
    with pytest.raises(ValueError, match="no ModelCheckpoint with a monitor"):
        runner.main(table, ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "results"),
                            "--seeds", "1", "--only", "w4"])


def test_test_checkpoints_are_validated(toy_table):
    import dataclasses

    with pytest.raises(ValueError, match="test_checkpoints"):
        dataclasses.replace(toy_table, test_checkpoints=("best", "best"))


def test_quick_threads_are_set_in_quick_mode_only(toy_table, tmp_path, monkeypatch):
    import dataclasses

    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    table = dataclasses.replace(toy_table, quick_threads=1)
    _run(table, tmp_path, "--dry-run")
    assert calls == [1]
    _run(dataclasses.replace(toy_table, quick_threads=None), tmp_path, "--dry-run")
    assert calls == [1]
