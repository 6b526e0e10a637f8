"""Under DDP (2 CPU processes, gloo) a run resumed from a checkpoint written inside an epoch ends with
the weights of the uninterrupted run, bit for bit.

Each rank trains its own share of the epoch's order (:class:`datamodules.sampling.ShardedEpochShuffleSampler`,
the cut Lightning's DistributedSamplerWrapper would make), so the resumed ranks leave out the batches they
had trained. The runs are the README's ``reproduce/train.py fit ... --trainer.strategy ddp`` commands, as
subprocesses, with the smoke recipe (2 steps per rank and epoch, 2 epochs) and a checkpoint after every step.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ablations.framework.provenance import REPO_ROOT
from tests.training.helpers import SMOKE


def _fit(out: Path, cache: Path, *extra: str) -> dict:
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(out), "name": "", "version": "run"}}
    callbacks = [{"class_path": "lightning_modules.callbacks.RNGStateCheckpoint"},
                 {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(out / "ckpt"), "save_top_k": -1, "every_n_train_steps": 1,
                                "filename": "{step}", "save_last": True}}]
    command = [sys.executable, "reproduce/train.py", "fit", *[a for f in SMOKE for a in ("--config", str(f))],
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
               "--trainer.deterministic", "true", "--trainer.max_epochs", "2",
               "--trainer.limit_train_batches", "null", "--trainer.enable_progress_bar", "false",
               "--data.init_args.val_volumes", "0",
               "--trainer.logger", json.dumps(logger), "--trainer.callbacks", json.dumps(callbacks), *extra]
    env = {**os.environ, "REPRO_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)


def test_a_ddp_run_resumed_inside_an_epoch_ends_as_the_uninterrupted_one(tmp_path):
    cache = tmp_path / "cache"
    straight = _fit(tmp_path / "straight", cache)
    assert straight["global_step"] == 4  # 2 epochs × 2 steps on each rank
    step1 = tmp_path / "straight" / "ckpt" / "step=1.ckpt"
    assert torch.load(step1, map_location="cpu", weights_only=False)["epoch"] == 0  # inside epoch 0
    resumed = _fit(tmp_path / "resumed", cache, "--ckpt_path", str(step1))
    assert resumed["global_step"] == 4
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
