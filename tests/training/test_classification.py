"""ClassificationModule: a tiny fit + test on synthetic class folders, its report, the LR schedule, and the
same test numbers on 1 and 2 processes.

Run as a script (``python tests/training/test_classification.py OUT DEVICES ROOT``, or under torchrun),
it tests an untrained seeded tiny ViT on an odd number of images, which the 1-vs-2-process test compares.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from timm.models.vision_transformer import VisionTransformer

from datamodules.imagenet import ImageNetDataModule
from datamodules.synthetic_folders import write_synthetic_folders
from lightning_modules.classification import ClassificationModule, classification_report, weight_decay_groups
from lightning_modules.metrics import MetricReport
from lightning_modules.schedules import warmup_cosine_factor

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_vit(num_classes: int = 3) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes,
                             class_token=False, global_pool="avg")


def _data(root: Path, **kwargs) -> ImageNetDataModule:
    kwargs = {"img_size": 32, "batch_size": 4, "num_workers": 0, "data_check": "off", **kwargs}
    return ImageNetDataModule(data_dir=str(root), **kwargs)


def _trainer(root: Path, version: str, **kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                "logger": CSVLogger(root, name="", version=version), "log_every_n_steps": 1,
                "enable_checkpointing": False, "num_sanity_val_steps": 0}
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """3 classes × (8 train, 3 val): 9 evaluation images, an odd number."""
    return write_synthetic_folders(tmp_path_factory.mktemp("cls") / "imagenet", num_classes=3, train_per_class=8,
                                   val_per_class=3, size=36)


def test_fit_and_test_report(folders, tmp_path):
    L.seed_everything(0)
    module = ClassificationModule(tiny_vit(), num_classes=3, warmup_epochs=1)
    trainer = _trainer(tmp_path, "fit", max_epochs=2, gradient_clip_val=5.0)
    data = _data(folders)
    with pytest.warns(UserWarning, match="top-3 accuracy"):  # fewer than 5 classes: top-5 is clamped
        trainer.fit(module, datamodule=data)
    assert 0.0 <= float(trainer.callback_metrics["val/top1"]) <= 1.0  # a fraction, for monitoring
    assert float(trainer.callback_metrics["val/top5"]) == 1.0  # top-3 of 3 classes
    assert trainer.global_step == 12  # 24 images, batch 4, 2 epochs

    trainer.test(module, datamodule=data)
    report = module.test_report
    assert isinstance(report, MetricReport) and set(report.metrics) == {"test/top1", "test/top5"}
    assert report.metrics["test/top5"] == 100.0 and report.meta["top5_k"] == 3
    assert len(report.cases) == 9 and report.cases[0]["case"] == "val/n90000000/ILSVRC2012_val_00000001.JPEG"
    assert set(report.cases[0]) == {"case", "label", "prediction", "correct", "top5_correct"}
    top1 = 100.0 * sum(row["prediction"] == row["label"] for row in report.cases) / 9
    assert report.metrics["test/top1"] == pytest.approx(top1)
    assert report.meta["data_kind"] == "real" and report.meta["weights"] == "model"
    written = json.loads((tmp_path / "fit" / "test_metrics.json").read_text())
    assert written == json.loads(json.dumps(report.to_json()))
    assert trainer.callback_metrics["test/top1"].item() == pytest.approx(report.metrics["test/top1"])


def test_report_agrees_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_accuracy

    torch.manual_seed(1)
    logits, labels = torch.randn(11, 7), torch.randint(0, 7, (11,))
    records = {f"img{i:02d}": {"label": int(y), "topk": torch.topk(x, 5).indices.tolist()}
               for i, (x, y) in enumerate(zip(logits, labels, strict=True))}
    report = classification_report(records, 5)
    for key, k in (("test/top1", 1), ("test/top5", 5)):
        expected = 100.0 * float(multiclass_accuracy(logits, labels, 7, top_k=k, average="micro"))
        assert report.metrics[key] == pytest.approx(expected)


def test_schedule_closed_form():
    total, warmup, w, m = 100, 10, 1e-3, 1e-2
    assert warmup_cosine_factor(0, total, warmup, w, m) == warmup_cosine_factor(1, total, warmup, w, m) == w
    for k in range(1, 120):
        t = k - 1
        if t < warmup:
            expected = w + (1 - w) * t / warmup
        elif t < total:
            expected = m + 0.5 * (1 - m) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        else:
            expected = m
        assert warmup_cosine_factor(k, total, warmup, w, m) == pytest.approx(expected, abs=1e-12)
        assert warmup_cosine_factor(k - 1, total, warmup, w, m, lag=False) == pytest.approx(expected, abs=1e-12)
    assert warmup_cosine_factor(warmup + 1, total, warmup, w, m) == pytest.approx(1.0)  # peak after warm-up


class _LRs(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_fit_follows_the_scaled_schedule(folders, tmp_path):
    """Effective batch 4 → LR, warm-up LR and min LR × 4/512; 1 warm-up epoch (6 steps) of 18."""
    L.seed_everything(0)
    module = ClassificationModule(tiny_vit(), num_classes=3, warmup_epochs=1, mixup=0.0, cutmix=0.0)
    lrs = _LRs()
    trainer = _trainer(tmp_path, "lr", max_epochs=3, callbacks=[lrs], limit_val_batches=0)
    trainer.fit(module, datamodule=_data(folders))
    scale = 4 / 512
    expected = [5e-4 * scale * warmup_cosine_factor(k, 18, 6, 5e-7 / 5e-4, 5e-6 / 5e-4) for k in range(18)]
    assert lrs.lrs == pytest.approx(expected, rel=1e-9)
    assert lrs.lrs[0] == pytest.approx(5e-7 * scale) and max(lrs.lrs) == pytest.approx(5e-4 * scale, rel=1e-3)
    groups = trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert type(trainer.optimizers[0]) is torch.optim.AdamW and groups[0]["betas"] == (0.9, 0.999)


def test_fits_are_reproducible_for_any_num_workers(folders, tmp_path):
    """Augmentation per (seed, epoch, index) and Mixup per (seed, batch count, rank): equal weights."""
    weights = []
    for workers in (0, 1):
        L.seed_everything(0)
        module = ClassificationModule(tiny_vit(), num_classes=3, warmup_epochs=0)
        _trainer(tmp_path, f"w{workers}", max_epochs=1, limit_val_batches=0).fit(
            module, datamodule=_data(folders, num_workers=workers))
        weights.append(module.net.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_weight_decay_groups_follow_the_release():
    net = tiny_vit()
    decay, no_decay = (group["params"] for group in weight_decay_groups(net))
    names = {id(p): n for n, p in net.named_parameters()}
    assert "pos_embed" in {names[id(p)] for p in no_decay}  # net.no_weight_decay()
    assert all(p.ndim > 1 for p in decay) and all(not names[id(p)].endswith(".bias") for p in decay)
    assert len(decay) + len(no_decay) == len(list(net.parameters()))


def test_ema_is_evaluated_and_checkpointed(folders, tmp_path):
    L.seed_everything(0)
    module = ClassificationModule(tiny_vit(), num_classes=3, warmup_epochs=0, ema=True, ema_decay=0.5)
    trainer = _trainer(tmp_path, "ema", max_epochs=1, limit_val_batches=0)
    data = _data(folders)
    trainer.fit(module, datamodule=data)
    assert module.eval_net is module.ema.module
    ema_w, net_w = module.ema.module.head.weight, module.net.head.weight
    assert not torch.equal(ema_w, net_w) and not ema_w.requires_grad
    assert any(key.startswith("ema.module.") for key in module.state_dict())
    assert all(id(p) not in {id(q) for q in module.ema.parameters()}
               for g in trainer.optimizers[0].param_groups for p in g["params"])
    trainer.test(module, datamodule=data)
    assert module.test_report.meta["weights"] == "EMA"


def test_errors(folders, tmp_path):
    with pytest.raises(ValueError, match="num_classes=4 but the data set"):
        _trainer(tmp_path, "e").test(ClassificationModule(tiny_vit(4), num_classes=4), datamodule=_data(folders))
    module = ClassificationModule(tiny_vit(), num_classes=3)
    odd = {"image": torch.randn(3, 3, 32, 32), "label": torch.tensor([0, 1, 2])}
    with pytest.raises(ValueError, match="Mixup needs an even batch"):
        module.training_step(odd, 0)


def test_smoke_recipe_fits_and_tests_the_slab_net(tmp_path):
    """deit_t.yaml + the synthetic and smoke layers: SLAB-DeiT (SLA, PRepBN), γ schedule, BN recalibration."""
    from tests.training.helpers import CONFIGS, make_cli

    files = [CONFIGS / "slab" / "deit_t.yaml", CONFIGS / "_base_" / "synthetic_imagenet.yaml",
             CONFIGS / "slab" / "smoke.yaml"]
    synthetic = {"num_classes": 10, "train_per_class": 4, "val_per_class": 1, "size": None, "seed": 0,
                 "cache_dir": str(tmp_path / "cache")}
    cli = make_cli(tmp_path, files, **{"data.init_args.synthetic": synthetic})
    assert type(cli.model.net).__name__ == "SLABVisionTransformer" and cli.model.net.img_size == 32
    assert cli.trainer.gradient_clip_val == 5.0 and cli.datamodule.data_check == "fast"
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 4  # 40 images, batch 16 (last incomplete batch dropped), 2 epochs
    cli.trainer.test(cli.model, datamodule=cli.datamodule)
    report = cli.model.test_report
    assert set(report.metrics) == {"test/top1", "test/top5"} and len(report.cases) == 10
    assert report.meta["data_kind"] == "synthetic" and report.meta["num_classes"] == 10


# ------------------------------------------------------------------ exact on 1 and 2 processes
def _script(out: Path, devices: int, root: Path) -> None:
    L.seed_everything(0)  # the same untrained weights on every process
    module = ClassificationModule(tiny_vit(), num_classes=3)
    data = _data(root, eval_batch_size=2)
    trainer = _trainer(out, "odd", devices=devices, strategy="ddp" if devices > 1 else "auto")
    trainer.test(module, datamodule=data)


def _run(out: Path, devices: int, root: Path) -> dict:
    launcher = [sys.executable] if devices == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([*launcher, __file__, str(out), str(devices), str(root)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "odd" / "test_metrics.json").read_text())


def test_two_processes_give_the_numbers_of_one(folders, tmp_path):
    one = _run(tmp_path / "one", 1, folders)
    two = _run(tmp_path / "two", 2, folders)
    assert one["meta"]["num_images"] == two["meta"]["num_images"] == 9  # 2 processes: 10 with the padding repeat
    assert two["metrics"] == one["metrics"]  # exactly
    assert two["cases"] == one["cases"]


if __name__ == "__main__":
    _script(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
