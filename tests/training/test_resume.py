"""Resuming from a mid-training checkpoint reproduces the uninterrupted run's final weights and batches.

At the end of an epoch and inside one (``ModelCheckpoint(every_n_train_steps=...)``): Lightning 2.x
restores its batch counters and goes on with the epoch's remaining batches, but restarts a map-style
DataLoader from its first batch, so the training sampler itself leaves out the batches already trained
(:func:`datamodules.sampling.resume_point`). The subprocess SIGKILL version is ``test_kill_resume.py``.
"""
from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from datamodules.sampling import EpochShuffleSampler, ResumePoint, progress_resume_point, resume_point
from tests.training.helpers import SMOKE, make_cli

RUN = {
    "trainer.max_epochs": 3,
    "trainer.limit_train_batches": 2,
    "trainer.callbacks": [
        {"class_path": "lightning_modules.callbacks.RNGStateCheckpoint"},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_top_k": -1, "every_n_epochs": 1, "filename": "{epoch}"}},
    ],
    "data.init_args.val_volumes": 0,
    "model.init_args.net.init_args.drop_path_rate": 0.3,  # consumes the RNG during training
}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _fit(tmp_path, ckpt_path=None):
    cli = make_cli(tmp_path, SMOKE, **RUN)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.model.state_dict(), cli.trainer


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tmp_path):
    straight, trainer = _fit(tmp_path / "straight")
    assert trainer.global_step == 6
    checkpoint = next((tmp_path / "straight").rglob("epoch=0.ckpt"))
    resumed, trainer = _fit(tmp_path / "resumed", ckpt_path=str(checkpoint))
    assert trainer.global_step == 6
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_a_different_seed_gives_different_weights(tmp_path):
    """Guards the resume test: weights do depend on the run's randomness."""
    first, _ = _fit(tmp_path / "a")
    RUN_B = {**RUN, "seed_everything": 7, "data.init_args.seed": 7}
    cli = make_cli(tmp_path / "b", SMOKE, **RUN_B)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    second = cli.model.state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)


# ------------------------------------------------------------------ inside an epoch

MID_EPOCH = {
    "trainer.max_epochs": 2,
    "trainer.limit_train_batches": 3,  # of the smoke set's 4 batches: the epoch's last batch is not the loader's
    "trainer.callbacks": [
        {"class_path": "lightning_modules.callbacks.RNGStateCheckpoint"},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_top_k": -1, "every_n_train_steps": 1, "filename": "{step}"}},
    ],
    "data.init_args.val_volumes": 1,  # validation after each epoch's last batch
    "model.init_args.net.init_args.drop_path_rate": 0.1,
}


class BatchRecorder(L.Callback):
    """The (global step, fingerprint) of every training batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        image = batch["image"].double()
        self.batches.append((trainer.global_step, float((image * torch.arange(1, image.numel() + 1,
                             dtype=torch.float64).reshape(image.shape)).sum())))


def _fit_recorded(tmp_path, ckpt_path=None, **dotted):
    cli = make_cli(tmp_path, SMOKE, **{**MID_EPOCH, **dotted})
    recorder = BatchRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.model.state_dict(), cli.trainer, recorder.batches


@pytest.fixture(scope="module")
def straight_mid_epoch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        weights, trainer, batches = _fit_recorded(folder)
    assert trainer.global_step == 6 and [step for step, _ in batches] == list(range(6))
    return folder, weights, batches


@pytest.mark.parametrize(("step", "workers"), [
    (1, 0),   # inside epoch 0
    (3, 2),   # after epoch 0's last batch, before its validation; DataLoader workers prefetch
    (4, 2),   # inside epoch 1
])
def test_resume_inside_an_epoch_trains_on_the_remaining_batches_only(tmp_path, straight_mid_epoch, step, workers):
    folder, straight, straight_batches = straight_mid_epoch
    checkpoint = next(folder.rglob(f"step={step}.ckpt"))
    resumed, trainer, batches = _fit_recorded(tmp_path, str(checkpoint), **{"data.init_args.num_workers": workers})
    assert trainer.global_step == 6
    assert batches == straight_batches[step:]  # each remaining batch once, in order; none twice
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------ the pieces


def test_the_sampler_leaves_out_the_skipped_items_of_its_first_iteration_only():
    sampler = EpochShuffleSampler(10, seed=3, epoch=2, skip=4)
    order = sampler.permutation(2)
    assert len(sampler) == 10  # Lightning's batch count of the epoch stays
    assert list(sampler) == [(2, i) for i in order[4:]]
    assert list(sampler) == [(2, i) for i in order]
    sampler.set_epoch(3)
    assert list(sampler) == [(3, i) for i in sampler.permutation(3)]
    stale = EpochShuffleSampler(10, seed=3, epoch=2, skip=4)
    stale.set_epoch(3)  # the skip belongs to epoch 2
    assert list(stale) == [(3, i) for i in stale.permutation(3)]
    with pytest.raises(ValueError):
        EpochShuffleSampler(10, skip=-1)


def _progress(ready: int, started: int, processed: int, completed: int) -> dict:
    counts = {"ready": ready, "started": started, "processed": processed, "completed": completed}
    return {"total": dict(counts), "current": dict(counts)}


@pytest.mark.parametrize(("epochs", "batches", "last", "expected"), [
    ((0, 0, 0, 0), (0, 0, 0, 0), False, (0, 0)),  # a fresh run
    ((1, 1, 0, 0), (2, 2, 2, 1), False, (0, 2)),  # on_train_batch_end of epoch 0's 2nd batch
    ((1, 1, 0, 0), (2, 2, 2, 2), False, (0, 2)),  # a validation inside epoch 0, after its 2nd batch
    ((2, 2, 1, 1), (4, 4, 4, 3), True, (2, 0)),   # epoch 1's last batch: Lightning goes on with epoch 2
    ((2, 2, 2, 1), (4, 4, 4, 4), True, (2, 0)),   # on_train_epoch_end of epoch 1
])
def test_the_resume_point_of_lightnings_progress_counters(epochs, batches, last, expected):
    batch_progress = {**_progress(*batches), "is_last_batch": last}
    assert progress_resume_point(_progress(*epochs), batch_progress) == ResumePoint(*expected)


class _Counters:
    def __init__(self, state):
        self._state = state
        self.total = SimpleNamespace(**state["total"])

    def state_dict(self):
        return self._state


def _trainer(world_size: int):
    epochs = _Counters(_progress(2, 2, 1, 1))
    batches = _Counters({**_progress(3, 3, 3, 2), "is_last_batch": False})
    return SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=epochs, epoch_loop=SimpleNamespace(
        batch_progress=batches)), ckpt_path=None, world_size=world_size, is_global_zero=True)


def test_the_resume_point_counts_each_processs_own_batches():
    """Under DDP each rank trained ``batches_done`` batches of its own share (ShardedEpochShuffleSampler)."""
    assert resume_point(_trainer(world_size=1)) == ResumePoint(1, 3)
    assert resume_point(_trainer(world_size=2)) == ResumePoint(1, 3)
    assert resume_point(None) == ResumePoint(0, 0)


@pytest.mark.parametrize(("num_items", "world"), [(10, 2), (11, 2), (7, 3), (2, 4), (1, 2), (0, 2)])
def test_the_sharded_sampler_yields_what_lightnings_ddp_wrapper_makes_of_the_plain_one(num_items, world):
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from datamodules.sampling import ShardedEpochShuffleSampler

    for rank in range(world):
        plain = EpochShuffleSampler(num_items, seed=5)
        wrapped = DistributedSamplerWrapper(plain, num_replicas=world, rank=rank, shuffle=False)
        sharded = ShardedEpochShuffleSampler(num_items, num_replicas=world, rank=rank, seed=5)
        assert isinstance(sharded, torch.utils.data.DistributedSampler)  # so Lightning keeps it as it is
        for epoch in (0, 3):
            wrapped.set_epoch(epoch), sharded.set_epoch(epoch)
            assert list(sharded) == list(wrapped) and len(sharded) == len(wrapped)


def test_the_sharded_sampler_skips_items_of_its_own_share_once():
    from datamodules.sampling import ShardedEpochShuffleSampler

    whole = list(ShardedEpochShuffleSampler(11, num_replicas=2, rank=1, seed=3, epoch=2))
    resumed = ShardedEpochShuffleSampler(11, num_replicas=2, rank=1, seed=3, epoch=2, skip=4)
    assert list(resumed) == whole[4:] and len(resumed) == 6
    assert list(resumed) == whole  # the next iteration is whole again
    with pytest.raises(ValueError, match="rank"):
        ShardedEpochShuffleSampler(4, num_replicas=2, rank=2)
