"""Deterministic sampling for every datamodule: epoch-seeded shuffling, worker seeding, loader settings.

The order of epoch ``e`` is a pure function of ``(seed, e)``; together with
per-item augmentation seeds (:func:`datamodules.transforms.item_seed`) a batch
is a pure function of ``(seed, epoch, step)`` for any ``num_workers``, and a run
resumed from a checkpoint replays exactly what the uninterrupted run saw.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler", "seed_worker", "loader_kwargs", "start_epoch"]


class EpochShuffleSampler(Sampler):
    """Shuffles with ``torch.Generator().manual_seed(seed + epoch)``; yields ``(epoch, index)``.

    The order of epoch ``e`` is a pure function of ``(seed, e)``. Lightning calls
    :meth:`set_epoch` before each training epoch (also through its
    ``DistributedSamplerWrapper`` under DDP). ``dataset``, if given, is told the
    epoch too, for code that indexes it with plain integers.
    """

    def __init__(
        self, num_items: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, dataset: Any = None
    ):
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.dataset = dataset
        self.epoch = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def permutation(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else int(epoch)
        if not self.shuffle:
            return list(range(self.num_items))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.permutation(epoch)])

    def __len__(self) -> int:
        return self.num_items


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and ``numpy`` from torch's per-worker seed.

    Torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from
    the DataLoader's generator); the augmentation itself is reseeded per item
    and does not depend on this.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    try:  # OpenCV's own thread pool is pointless (and fork-unsafe) inside a worker
        import cv2

        cv2.setNumThreads(0)
    except Exception:  # pragma: no cover - cv2 is a hard dependency, be lenient anyway
        pass


def loader_kwargs(seed: int, num_workers: int) -> dict[str, Any]:
    """DataLoader keywords shared by every split: seeded workers, an own generator, no persistent workers.

    The own generator is used only to draw the workers' base seed, so iterating a
    loader never consumes the global torch RNG (model init, dropout). Persistent
    workers would carry process state from one epoch into the next.
    """
    return {
        "num_workers": num_workers,
        "worker_init_fn": seed_worker,
        "generator": torch.Generator().manual_seed(seed),
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": False,
    }


def start_epoch(trainer: Any) -> int:
    """The epoch a Lightning trainer is about to run: the value it later passes to ``set_epoch``.

    ``epoch_progress.current.processed`` (not ``current_epoch``, which counts
    *completed* epochs and lags by one when resuming from a checkpoint saved in
    ``on_train_epoch_end``); 0 without a trainer.
    """
    if trainer is None:
        return 0
    try:
        return int(trainer.fit_loop.epoch_progress.current.processed)
    except AttributeError:  # pragma: no cover - other Lightning versions
        return int(trainer.current_epoch)
