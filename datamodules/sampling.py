"""Deterministic sampling for every datamodule: epoch-seeded shuffling, worker seeding, loader settings.

The order of epoch ``e`` is a pure function of ``(seed, e)``; together with
per-item augmentation seeds (:func:`datamodules.transforms.item_seed`) a batch
is a pure function of ``(seed, epoch, step)`` for any ``num_workers``, and a run
resumed from a checkpoint replays exactly what the uninterrupted run saw, also
from a checkpoint written inside an epoch (:func:`resume_point`).
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "EpochShuffleSampler",
    "ShardedEpochShuffleSampler",
    "distributed_shard",
    "ResumePoint",
    "seed_worker",
    "loader_kwargs",
    "start_epoch",
    "resume_point",
    "progress_resume_point",
]


class EpochShuffleSampler(Sampler):
    """Shuffles with ``torch.Generator().manual_seed(seed + epoch)``; yields ``(epoch, index)``.

    The order of epoch ``e`` is a pure function of ``(seed, e)``. Lightning calls
    :meth:`set_epoch` before each training epoch (also through its
    ``DistributedSamplerWrapper`` under DDP). ``dataset``, if given, is told the
    epoch too, for code that indexes it with plain integers.

    ``skip``: the first iteration of ``epoch`` leaves out the first ``skip`` items of
    its order (a run resumed inside that epoch: the items already trained on, see
    :func:`resume_point`); later iterations and other epochs are whole. ``len()``
    stays ``num_items``, so Lightning's batch count of the epoch does not change
    (its counters continue from the checkpoint's batch). Under DDP use
    :class:`ShardedEpochShuffleSampler` (Lightning's wrapper would index the full list).
    """

    def __init__(
        self, num_items: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, dataset: Any = None,
        skip: int = 0,
    ):
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.dataset = dataset
        self.epoch = 0
        self.set_epoch(epoch)
        #: ``(epoch, items)`` still to be left out by the first iteration of that epoch
        self.pending_skip: tuple[int, int] | None = (self.epoch, int(skip)) if skip else None

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

    def epoch_order(self, epoch: int) -> list[int]:
        """The items this sampler yields in ``epoch`` (before any resume skip)."""
        return self.permutation(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        order = self.epoch_order(epoch)
        if self.pending_skip is not None:
            skip_epoch, skip = self.pending_skip
            self.pending_skip = None  # only the first iteration resumes; a stale skip is dropped
            if skip_epoch == epoch:
                order = order[skip:]
        return iter([(epoch, i) for i in order])

    def __len__(self) -> int:
        return self.num_items


class ShardedEpochShuffleSampler(EpochShuffleSampler, DistributedSampler):
    """One DDP rank's share of :class:`EpochShuffleSampler`'s order; resumable inside an epoch.

    The epoch's order is padded to a multiple of ``num_replicas`` by repeating its start, and
    rank r takes its items r, r + W, r + 2W, ...: exactly what Lightning's
    ``DistributedSamplerWrapper`` makes of an :class:`EpochShuffleSampler` (``DistributedSampler``
    padding, ``shuffle=False``, ``drop_last=False``), so every rank's batches are those of the
    wrapped sampler. Being a ``DistributedSampler`` itself, Lightning uses it as it is, so
    ``skip`` (items of *this rank's* share) resumes inside an epoch under DDP as on one process.
    ``len()`` is the rank's share, ``ceil(num_items / num_replicas)``.
    """

    def __init__(self, num_items: int, *, num_replicas: int, rank: int, **kwargs: Any) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.num_replicas, self.rank, self.drop_last = int(num_replicas), int(rank), False
        self.num_samples = math.ceil(int(num_items) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        EpochShuffleSampler.__init__(self, num_items, **kwargs)

    def epoch_order(self, epoch: int) -> list[int]:
        order = self.permutation(epoch)
        padding = self.total_size - len(order)
        if order and padding:
            order = order + (order * math.ceil(padding / len(order)))[:padding]
        return order[self.rank:self.total_size:self.num_replicas]

    def __len__(self) -> int:
        return self.num_samples


def distributed_shard(trainer: Any) -> tuple[int, int] | None:
    """``(num_replicas, rank)`` when ``trainer`` shards training data over processes, else ``None``.

    That is under a multi-process strategy with Lightning's ``use_distributed_sampler`` on
    (its default), whose ``DistributedSampler`` settings (world size, global rank) are used.
    """
    if trainer is None or int(getattr(trainer, "world_size", 1) or 1) <= 1:
        return None
    connector = getattr(trainer, "_accelerator_connector", None)
    if connector is not None and not getattr(connector, "use_distributed_sampler", True):
        return None
    return int(trainer.world_size), int(getattr(trainer, "global_rank", 0))


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

    ``resume_point(trainer).epoch``: from the fit loop's ``epoch_progress`` (not
    ``current_epoch``, which counts *completed* epochs and lags by one when resuming
    from a checkpoint saved in ``on_train_epoch_end``), or from the checkpoint being
    resumed while the loops are not restored yet; 0 without a trainer.
    """
    return resume_point(trainer).epoch


class ResumePoint(NamedTuple):
    """Where training (re)starts: ``epoch``, and how many of its batches were already trained."""

    epoch: int
    batches_done: int = 0


def progress_resume_point(epoch_progress: Mapping[str, Any], batch_progress: Mapping[str, Any]) -> ResumePoint:
    """The resume point recorded by a fit loop's progress counters (their ``state_dict()`` form).

    ``epoch_progress`` is ``fit_loop.epoch_progress``, ``batch_progress`` is
    ``fit_loop.epoch_loop.batch_progress`` (in a checkpoint: ``loops.fit_loop.epoch_progress``
    and ``loops.fit_loop["epoch_loop.batch_progress"]``). An epoch was started but not
    processed when the checkpoint was written inside it (``on_train_batch_end``, e.g.
    ``ModelCheckpoint(every_n_train_steps=N)``, or a validation inside the epoch); its
    ``processed`` batches are done, unless that batch was the epoch's last (Lightning then
    goes on with the next epoch). A checkpoint written at the end of an epoch (its
    ``processed`` already counts it) resumes at the start of the next.
    """
    epochs = epoch_progress["current"]
    epoch = int(epochs["processed"])
    if int(epochs["started"]) > epoch:  # written inside `epoch`
        if batch_progress.get("is_last_batch", False):
            return ResumePoint(epoch + 1, 0)
        return ResumePoint(epoch, int(batch_progress["current"]["processed"]))
    return ResumePoint(epoch, 0)


def _checkpoint_fit_loop(path: Any) -> Mapping[str, Any] | None:
    """The ``loops.fit_loop`` state of the checkpoint file at ``path`` (memory-mapped, tensors not read)."""
    path = os.fspath(path)
    if not os.path.isfile(path):  # a remote URL or a special value: not read here
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable file is reported by Lightning's own loading
        return None
    loops = checkpoint.get("loops") if isinstance(checkpoint, Mapping) else None
    fit_loop = loops.get("fit_loop") if isinstance(loops, Mapping) else None
    return fit_loop if isinstance(fit_loop, Mapping) else None


def resume_point(trainer: Any) -> ResumePoint:
    """The epoch a Lightning trainer is about to run and the number of its batches already trained.

    For ``train_dataloader()``: the sampler starts at ``epoch`` and leaves out the first
    ``batches_done * batch_size`` items (:class:`EpochShuffleSampler` ``skip``). On a
    resume from a checkpoint written inside an epoch, Lightning 2.x restores its batch
    counters and goes on with the epoch's remaining batches, but a map-style DataLoader
    starts again from its first batch, so without the skip the resumed epoch would see
    its first batches twice and its last ones never.

    Read from the fit loop's progress counters once they are restored; before that (the
    train DataLoader is first requested by ``trainer.estimated_stepping_batches`` inside
    ``configure_optimizers``, *before* Lightning restores the loops, and it is iterated,
    with workers prefetching, from there) from the checkpoint being resumed,
    ``trainer.ckpt_path``. ``batches_done`` counts each process's batches (under DDP, every
    rank trained that many of its own share: :class:`ShardedEpochShuffleSampler`).
    ``(0, 0)`` without a trainer.
    """
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None:
        return ResumePoint(0, 0)
    epoch_loop = fit_loop.epoch_loop
    point = progress_resume_point(fit_loop.epoch_progress.state_dict(), epoch_loop.batch_progress.state_dict())
    ckpt_path = getattr(trainer, "ckpt_path", None)
    if fit_loop.epoch_progress.total.ready == 0 and ckpt_path:  # resuming; the loops are not restored yet
        saved = _checkpoint_fit_loop(ckpt_path)
        if saved is not None and "epoch_progress" in saved and "epoch_loop.batch_progress" in saved:
            point = progress_resume_point(saved["epoch_progress"], saved["epoch_loop.batch_progress"])
        elif getattr(trainer, "is_global_zero", True):
            from lightning.pytorch.utilities.rank_zero import rank_zero_warn

            rank_zero_warn(f"Could not read the loop state of {ckpt_path} (not a local checkpoint file?): if it "
                           "was written inside an epoch, the resumed run starts that epoch's data from its start")
    if point.batches_done:
        _info(trainer, f"Resuming inside epoch {point.epoch}: the training sampler leaves out the "
                       f"{point.batches_done} batches trained before the checkpoint (so Lightning's warning "
                       "that the dataloader is not resumable does not apply)")
    return point


def _info(trainer: Any, message: str) -> None:
    if getattr(trainer, "is_global_zero", True):
        from lightning.pytorch.utilities.rank_zero import rank_zero_info

        rank_zero_info(message)
