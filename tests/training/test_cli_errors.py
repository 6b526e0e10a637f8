"""Command-line entry points stop on bad data with one message naming the file, no traceback."""
from __future__ import annotations

import sys

import pytest
import torch

from ablations.cswin_unet.table5_upsampling import TABLE
from ablations.framework import runner
from datamodules.errors import DatasetError, exit_on_dataset_error
from reproduce import train
from tests.training.helpers import SMOKE


def _assert_one_clear_message(capsys, exit_info, missing) -> None:
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {missing}" in err and "does not exist" in err
    assert "Traceback" not in err


def test_train_cli_reports_a_missing_data_root(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no_such_synapse"
    argv = ["train.py", "fit"] + [a for f in SMOKE for a in ("--config", str(f))] + [
        "--data.class_path", "datamodules.synapse.SynapseDataModule",
        "--data.init_args.data_dir", str(missing), "--data.init_args.synthetic", "null",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    _assert_one_clear_message(capsys, exit_info, missing)


def test_table_runner_reports_a_missing_data_root(tmp_path, capsys):
    missing = tmp_path / "no_such_synapse"
    with pytest.raises(SystemExit) as exit_info:
        runner.main(TABLE, ["--quick", "--data-dir", str(missing), "--only", "carafe",
                            "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "results")])
    _assert_one_clear_message(capsys, exit_info, missing)


def test_traceback_is_kept_on_request(monkeypatch):
    monkeypatch.setenv("REPRO_TRACEBACK", "1")
    with pytest.raises(DatasetError), exit_on_dataset_error():
        raise DatasetError("/x: broken")


class _BrokenSlices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DatasetError(f"/data/train_npz/case{index:04d}.npz: label values must be in [0, 8]; found [9]")


def test_worker_errors_are_reported_without_the_worker_traceback(capsys):
    loader = torch.utils.data.DataLoader(_BrokenSlices(), num_workers=1)
    with pytest.raises(SystemExit), exit_on_dataset_error():
        next(iter(loader))
    err = capsys.readouterr().err
    assert err.startswith("error: /data/train_npz/case0000.npz: label values must be in [0, 8]; found [9]\n")
    assert "Traceback (most recent call last)" not in err
