"""Exact distributed evaluation: `test` on 2 CPU processes (DDP, gloo) gives the numbers of 1 process.

The commands are the README's (`reproduce/train.py test ... --trainer.strategy ddp
--trainer.devices 2 --trainer.accelerator cpu --ckpt_path ...`), run as subprocesses
on a synthetic set with an odd number of test cases (DistributedSampler pads it by
repeating a case), and with fewer cases than processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ablations.framework.provenance import REPO_ROOT
from tests.training.helpers import SMOKE, make_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Untrained smoke weights (lr 0): a random net predicts every organ somewhere, so Dice and HD95 are non-trivial."""
    tmp = tmp_path_factory.mktemp("ddp")
    cache = tmp / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPRO_CACHE_DIR", str(cache))
        cli = make_cli(tmp / "fit", SMOKE, **{"trainer.limit_train_batches": 1, "model.init_args.optimizer.lr": 0.0,
                                              "data.init_args.val_volumes": 0})
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (ckpt,) = (tmp / "fit").rglob("last.ckpt")
    return tmp, cache, ckpt


def _test(tmp, cache, ckpt, name: str, devices: int, cases: int) -> dict:
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(tmp), "name": "", "version": name}}
    command = [sys.executable, "reproduce/train.py", "test", *[a for f in SMOKE for a in ("--config", str(f))],
               "--data.init_args.synthetic.num_test_cases", str(cases),
               "--trainer.logger", json.dumps(logger), "--trainer.enable_progress_bar", "false",
               "--trainer.strategy", "ddp", "--trainer.devices", str(devices), "--trainer.accelerator", "cpu",
               "--ckpt_path", str(ckpt)]
    env = {**os.environ, "REPRO_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp / name / "test_metrics.json").read_text())


def test_two_processes_give_the_numbers_of_one(checkpoint):
    tmp, cache, ckpt = checkpoint
    one = _test(tmp, cache, ckpt, "one", devices=1, cases=3)
    two = _test(tmp, cache, ckpt, "two", devices=2, cases=3)
    assert [c["case"] for c in one["cases"]] == ["case0008", "case0022", "case0038"]  # each once, sorted
    assert one["metrics"]["test/mean_dice"] > 0 and one["metrics"]["test/mean_hd95"] > 0
    assert two["metrics"] == one["metrics"]  # exactly, not approximately
    assert two["cases"] == one["cases"]
    assert two["meta"]["num_cases"] == 3

    # fewer cases than processes: rank 1 evaluates a padding repeat, which is dropped
    single = _test(tmp, cache, ckpt, "single", devices=2, cases=1)
    assert single["cases"] == one["cases"][:1]
    assert single["meta"]["num_cases"] == 1


def test_gather_cases_sorts_by_case_id_on_one_process():
    import numpy as np

    from lightning_modules.distributed import gather_cases

    merged = gather_cases({"case0022": np.ones((8, 2)), "case0008": np.zeros((8, 2))})
    assert list(merged) == ["case0008", "case0022"]
