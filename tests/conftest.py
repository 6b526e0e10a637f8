"""Shared test set-up: offline W&B, deterministic CPU threads, marker tiers."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# synthetic sets and data-check caches of the tests go to a throw-away folder, not ~/.cache
os.environ.setdefault("REPRO_CACHE_DIR", tempfile.mkdtemp(prefix="repro-test-cache-"))



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def import_reproduce_script(name: str):
    """Import ``reproduce/<name>.py`` as a module (the entry scripts are not a package)."""
    import importlib
    import sys
    from pathlib import Path

    reproduce = str(Path(__file__).resolve().parents[1] / "reproduce")
    sys.path.insert(0, reproduce)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(reproduce)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``): one
    torch thread is fastest there; several threads on a busy 2-core CPU cost up to ~100×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
