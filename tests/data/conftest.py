"""Fixtures for the data tests: one small synthetic Synapse set per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamodules.synapse import SynapseDataModule
from datamodules.synthetic import write_synthetic_synapse

# 2 training cases x 6 slices (12 slices), 2 test volumes of 6 x 48 x 48
SMALL = {"num_train_cases": 2, "num_test_cases": 2, "slices_per_case": 6, "size": 48, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set, written once; treat as read-only (use ``data_copy`` to modify)."""
    return write_synthetic_synapse(tmp_path_factory.mktemp("synthetic") / "synapse", **SMALL)


@pytest.fixture()
def data_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the small set that a test may damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "synapse"))


@pytest.fixture()
def make_dm():
    def make(root: Path | str | None, **kwargs) -> SynapseDataModule:
        kwargs.setdefault("img_size", 32)
        kwargs.setdefault("batch_size", 4)
        # test_synapse.py tests the per-item checks (the last line of defence), which the whole-set
        # check in setup() would pre-empt; test_checks.py tests that check (data_check="full").
        kwargs.setdefault("data_check", "off")
        return SynapseDataModule(data_dir=None if root is None else str(root), **kwargs)

    return make
