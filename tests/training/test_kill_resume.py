"""Fault tolerance: a run killed (SIGKILL) inside an epoch resumes from its last.ckpt and ends exactly as an
uninterrupted run; a process that dies while writing a checkpoint never leaves a corrupt one.

The kill test runs ``reproduce/train.py fit`` with the smoke recipe (synthetic data, the smoke
network with stochastic depth switched on, two DataLoader workers, its checkpoint callbacks) in
subprocesses, deterministically, on the CPU: the uninterrupted run, and, at the same time, a run that
:class:`HoldAt` stops right after the recipe's ``every_n_train_steps`` checkpoint of a step inside
epoch 1, where the test kills its whole process group; then ``fit --ckpt_path last.ckpt`` finishes it.
Validation inside the resumed epoch is covered in-process by ``test_resume.py``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from ablations.framework.runner import REPO_ROOT
from lightning_modules.checkpointing import AtomicCheckpointIO, atomic_torch_save, temporary_files
from tests.training.helpers import CONFIGS, SMOKE, make_cli

TRAIN = REPO_ROOT / "reproduce" / "train.py"
STEPS_PER_EPOCH = 4  # smoke: 16 synthetic slices, batch 4 (limit_train_batches 4)
EPOCHS = 2
KILL_AT = 6  # smoke's every_n_train_steps (2) checkpoint after the 2nd of epoch 1's 4 steps
RUN = {
    "trainer": {
        "max_epochs": EPOCHS,
        "deterministic": True,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs", "name": "smoke"}}],
    },
    "model": {"init_args": {"net": {"init_args": {"drop_path_rate": 0.1}}}},  # consumes the RNG
    "data": {"init_args": {"num_workers": 2, "val_volumes": 0}},  # workers prefetch past the checkpoint
}


class HoldAt(L.Callback):
    """Test-only: once ``global_step >= step`` (its checkpoint written), touch ``marker`` and wait to be killed."""

    def __init__(self, step: int, marker: str, timeout_s: float = 120.0) -> None:
        self.step, self.marker, self.timeout_s = step, marker, timeout_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            Path(self.marker).touch()
            time.sleep(self.timeout_s)  # the test kills the process long before


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _env(cache: Path) -> dict[str, str]:
    # One thread per process: the runs overlap on a small machine, and equal numerics need equal settings.
    return {**os.environ, "REPRO_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _fit(folder: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """``train.py fit`` of the smoke recipe in ``folder`` (its runs/ go there), in its own process group."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(RUN))
    command = [sys.executable, str(TRAIN), "fit", *[a for f in SMOKE for a in ("--config", str(f))],
               "--config", str(folder / "run.yaml"), *extra]
    log = open(folder / "output.log", "w")  # noqa: SIM115 - closed with the process by _wait
    return subprocess.Popen(command, cwd=folder, env=_env(cache), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(process: subprocess.Popen, folder: Path, timeout: float = 300) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = "timeout"
    if code != 0:
        pytest.fail(f"fit in {folder} ended with {code}:\n{(folder / 'output.log').read_text()[-4000:]}")


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Exact equality of nested checkpoint contents (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _test_metrics(tmp_path: Path, ckpt: Path) -> dict[str, float]:
    cli = make_cli(tmp_path, SMOKE)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt), verbose=False, weights_only=True)
    return dict(cli.model.test_report.metrics)


def test_a_run_killed_inside_an_epoch_resumes_to_the_uninterrupted_result(tmp_path, cache, monkeypatch):
    started = time.perf_counter()
    straight = _fit(tmp_path / "straight", cache)
    killed_dir = tmp_path / "killed"
    marker = tmp_path / "held"
    killed = _fit(killed_dir, cache, f"--trainer.callbacks+={__name__}.HoldAt",
                  f"--trainer.callbacks.step={KILL_AT}", f"--trainer.callbacks.marker={marker}")
    deadline = time.monotonic() + 300
    while not marker.exists():
        if killed.poll() is not None:
            pytest.fail(f"the run to kill ended ({killed.returncode}) before step {KILL_AT}:\n"
                        f"{(killed_dir / 'output.log').read_text()[-4000:]}")
        assert time.monotonic() < deadline, "the run to kill never reached its step"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the trainer and its DataLoader workers, as an OOM kill or lost node
    killed.wait()
    assert killed.returncode == -signal.SIGKILL

    (last,) = killed_dir.glob("runs/smoke/version_0/checkpoints/last.ckpt")
    saved = _load(last)
    epochs = saved["loops"]["fit_loop"]["epoch_progress"]["current"]
    batches = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert saved["global_step"] == KILL_AT
    assert epochs["started"] == epochs["processed"] + 1 == 2, "not inside epoch 1"
    assert not batches["is_last_batch"] and batches["current"]["processed"] == KILL_AT - STEPS_PER_EPOCH

    resumed = _fit(killed_dir, cache, "--ckpt_path", str(last))  # a new run folder: version_1
    _wait(resumed, killed_dir)
    _wait(straight, tmp_path / "straight")
    seconds = time.perf_counter() - started

    (final,) = killed_dir.glob("runs/smoke/version_1/checkpoints/last.ckpt")
    (reference,) = (tmp_path / "straight").glob("runs/smoke/version_0/checkpoints/last.ckpt")
    ours, theirs = _load(final), _load(reference)
    assert theirs["global_step"] == ours["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert theirs["epoch"] == ours["epoch"]
    _assert_same(ours["state_dict"], theirs["state_dict"], "state_dict")
    _assert_same(ours["optimizer_states"], theirs["optimizer_states"], "optimizer_states")
    _assert_same(ours["lr_schedulers"], theirs["lr_schedulers"], "lr_schedulers")
    rng = "RNGStateCheckpoint"
    _assert_same(ours["callbacks"][rng], theirs["callbacks"][rng], "RNG states")
    assert "leaves out the 2 batches trained before the checkpoint" in (killed_dir / "output.log").read_text()

    monkeypatch.setenv("REPRO_CACHE_DIR", str(cache))
    assert _test_metrics(tmp_path / "test_resumed", final) == _test_metrics(tmp_path / "test_straight", reference)
    print(f"kill/resume runs: {seconds:.1f} s")


# ------------------------------------------------------------------ atomic checkpoint writes


def _checkpoint(value: float, numel: int = 1000) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((numel,), float(value))}, "global_step": int(value)}


def _crash_halfway(monkeypatch) -> None:
    """``torch.save`` writes half the bytes of the real serialisation, then the 'process dies'."""
    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError("simulated crash in the middle of writing a checkpoint")

    monkeypatch.setattr(torch, "save", half_then_crash)


def _assert_only(folder: Path, names: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == names


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_checkpoint(1), target)
    _crash_halfway(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        io.save_checkpoint(_checkpoint(2), target)
    monkeypatch.undo()
    assert io.load_checkpoint(target, weights_only=True)["global_step"] == 1
    _assert_only(target.parent, {"last.ckpt"})  # the partial temporary file was removed
    io.save_checkpoint(_checkpoint(3), target)
    assert _load(target)["global_step"] == 3


def test_a_crash_before_the_rename_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(1), target)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(_checkpoint(2), target)
    monkeypatch.undo()
    assert _load(target)["global_step"] == 1
    _assert_only(tmp_path, {"last.ckpt"})


def test_the_target_is_never_opened_for_writing(tmp_path, monkeypatch):
    """All bytes go to a temporary file in the same folder (same file system: the rename is atomic)."""
    target = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(1), target)
    opened = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        opened.append((Path(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    atomic_torch_save(_checkpoint(2), target)
    writes = [p for p, flags in opened if flags & (os.O_WRONLY | os.O_RDWR)]
    assert writes and all(p.parent == tmp_path and p != target and p.name.endswith(".tmp") for p in writes)
    assert _load(target)["global_step"] == 2


_WRITER = textwrap.dedent("""
    import sys
    import torch
    from lightning_modules.checkpointing import AtomicCheckpointIO
    io, step = AtomicCheckpointIO(), 0
    while True:
        step += 1
        io.save_checkpoint({"state_dict": {"w": torch.full((1_000_000,), float(step))}, "global_step": step},
                           sys.argv[1])
        print(step, flush=True)
""")


def test_a_process_killed_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that writes a 4 MB checkpoint in a loop; last.ckpt always loads and is consistent."""
    target = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, text=True)
    try:
        assert writer.stdout is not None
        for _ in range(3):  # three complete writes, then kill it wherever it is (most likely mid-write)
            assert writer.stdout.readline(), "the writer died"
    finally:
        writer.kill()
        writer.wait()
    checkpoint = _load(target)
    step = checkpoint["global_step"]
    assert step >= 3 and torch.equal(checkpoint["state_dict"]["w"], torch.full((1_000_000,), float(step)))
    # a leftover temporary of the killed write is neither a checkpoint nor a "last" one for Lightning
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["last.ckpt"]
    assert all(not p.name.startswith("last") and p.suffix == ".tmp" for p in temporary_files(target))
    finder = ModelCheckpoint(dirpath=tmp_path)
    assert finder._find_last_checkpoints(None) == {str(target)}
    AtomicCheckpointIO().save_checkpoint(_checkpoint(7), target)  # removes the dead writer's temporary
    assert temporary_files(target) == []
    assert _load(target)["global_step"] == 7


# ------------------------------------------------------------------ every recipe writes resumable checkpoints


@pytest.mark.parametrize("recipe", [
    [CONFIGS / "cswin_unet" / "synapse.yaml"],
    [CONFIGS / "cswin_unet" / "synapse.yaml", CONFIGS / "cswin_unet" / "quick.yaml",
     CONFIGS / "_base_" / "synthetic_synapse.yaml"],
    SMOKE,
], ids=["synapse", "quick", "smoke"])
def test_every_recipe_writes_checkpoints_atomically_and_last_ckpt_inside_epochs(tmp_path, recipe):
    trainer = make_cli(tmp_path, recipe).trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last_writers = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.save_last]
    assert any(c._every_n_train_steps > 0 for c in last_writers), "no last.ckpt inside an epoch"
    assert any(c._every_n_train_steps == 0 and c.save_top_k == 0 for c in last_writers), "no last.ckpt at the end"
    assert all(not c._enable_version_counter for c in last_writers), "two writers of last.ckpt need no versions"
