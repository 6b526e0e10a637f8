"""The DataLoaders of every datamodule here, written once: seeded, worker-independent, resumable.

A datamodule inherits :class:`SeededLoaders` and sets ``train_dataset`` / ``val_dataset``
/ ``test_dataset`` in ``setup()``; it has ``seed``, ``num_workers`` and ``batch_size``.
Training batches come from :class:`~datamodules.sampling.EpochShuffleSampler` (order a
pure function of ``(seed, epoch)``; a run resumed inside an epoch leaves out the batches
it already trained on), under DDP from its per-rank form
:class:`~datamodules.sampling.ShardedEpochShuffleSampler`; every loader uses
:func:`~datamodules.sampling.loader_kwargs`.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset

from .sampling import EpochShuffleSampler, ShardedEpochShuffleSampler, distributed_shard, loader_kwargs, resume_point

__all__ = ["SeededLoaders"]


class SeededLoaders:
    """Mixin: ``train_dataloader`` and the helpers the other loaders use."""

    #: drop the last incomplete training batch (ImageNet, as its release; the others keep it)
    drop_last_train: bool = False

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        """``dataset``, after running ``setup(stage)`` if it was not set up yet."""
        if dataset is None:
            self.setup(stage)
            dataset = {"fit": self.train_dataset, "validate": self.val_dataset, "test": self.test_dataset}[stage]
        assert dataset is not None
        return dataset

    def _loader(self, dataset: Dataset, batch_size: int, *, drop_last: bool = False, **order: Any) -> DataLoader:
        """``order``: ``sampler=`` or ``shuffle=``."""
        return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **order,
                          **loader_kwargs(self.seed, self.num_workers))

    def _train_loader(self, dataset: Dataset) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        epoch, batches_done = resume_point(trainer)
        order = {"seed": self.seed, "epoch": epoch, "dataset": dataset, "skip": batches_done * self.batch_size}
        shard = distributed_shard(trainer)
        if shard is None:
            sampler = EpochShuffleSampler(len(dataset), **order)
        else:  # this rank's share, as Lightning's DDP wrapper would cut it, but resumable inside an epoch
            sampler = ShardedEpochShuffleSampler(len(dataset), num_replicas=shard[0], rank=shard[1], **order)
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=self.drop_last_train)

    def train_dataloader(self) -> DataLoader:
        """Shuffled per ``(seed, epoch)``; starts where the run stands (see the module docstring)."""
        return self._train_loader(self._require(self.train_dataset, "fit"))
