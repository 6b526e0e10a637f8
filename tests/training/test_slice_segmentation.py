"""SliceSegmentationModule: a tiny fit + test on the CPU, its report, and the same numbers on 1 and 2 processes.

The datamodule here produces the batches the ConvFormer datamodules produce (train
``{"image", "label"}``; val/test add ``"case"`` and ``"patient"``). Run as a script
(``python tests/training/test_slice_segmentation.py OUT DEVICES``, or under torchrun),
it validates and tests an untrained seeded net on an odd patient-mode set and on a
one-image set, which the 1-vs-2-process test compares.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_modules.metrics import MetricReport
from lightning_modules.slice_segmentation import SliceSegmentationModule

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["background", "RV", "LV"]


class TinyNet(nn.Module):
    """(B, in_channels, H, W) → (B, num_classes, H, W)."""

    def __init__(self, num_classes: int = 3, img_size: int = 16, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.num_classes, self.img_size = num_classes, img_size
        self.layers = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Images(Dataset):
    """Image i: one 5×5 square per foreground class, intensity ~ class + noise; id ``<patient:04d>_<i:02d>``."""

    def __init__(self, start: int, count: int, size: int, num_classes: int, with_ids: bool) -> None:
        self.indices = range(start, start + count)
        self.size, self.num_classes, self.with_ids = size, num_classes, with_ids

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        i = self.indices[index]
        g = torch.Generator().manual_seed(1000 + i)
        label = torch.zeros(self.size, self.size, dtype=torch.long)
        for c in range(1, self.num_classes):
            y, x = torch.randint(0, self.size - 5, (2,), generator=g).tolist()
            label[y:y + 5, x:x + 5] = c
        image = label.float() / (self.num_classes - 1) * 0.7 + 0.3 * torch.rand(self.size, self.size, generator=g)
        item = {"image": image[None], "label": label}
        if self.with_ids:
            item["case"] = f"{1 + i % 3:04d}_{i:02d}"
            item["patient"] = item["case"][:4]
        return item


class TinySlices(L.LightningDataModule):
    """The ConvFormer datamodules' batch format and attributes, in memory."""

    num_classes = len(CLASSES)
    class_names = CLASSES
    is_synthetic = True

    def __init__(self, eval_mode: str | None = "patient", img_size: int = 16, train_images: int = 8,
                 val_images: int = 5, test_images: int = 5, batch_size: int = 2) -> None:
        super().__init__()
        self.eval_mode, self.img_size, self.batch_size = eval_mode, img_size, batch_size
        self.counts = (train_images, val_images, test_images)

    def setup(self, stage: str | None = None) -> None:
        n_train, n_val, n_test = self.counts
        self.train_dataset = _Images(0, n_train, self.img_size, self.num_classes, with_ids=False)
        self.val_dataset = _Images(100, n_val, self.img_size, self.num_classes, with_ids=True)
        self.test_dataset = _Images(200, n_test, self.img_size, self.num_classes, with_ids=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, self.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset, self.batch_size)


def _trainer(root: Path, version: str, **kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                "logger": CSVLogger(root, name="", version=version), "log_every_n_steps": 1}
    return L.Trainer(**{**defaults, **kwargs})


def _keys(names=("RV", "LV")) -> set[str]:
    scores = ("dice", "iou", "acc", "se", "sp", "row_hausdorff_l1", "hd95")
    return {f"test/{s}" for s in scores} | {f"test/{s}/{n}" for s in scores for n in names}


def test_fit_selects_on_val_dice_and_test_reports_per_patient(tmp_path):
    L.seed_everything(0)
    module = SliceSegmentationModule(TinyNet(), num_classes=3, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/dice", mode="max")
    trainer = _trainer(tmp_path, "fit", max_epochs=2, callbacks=[checkpoint])
    data = TinySlices()
    trainer.fit(module, datamodule=data)
    assert module.eval_mode == "patient"  # taken from the datamodule
    assert 0.0 <= float(trainer.callback_metrics["val/dice"]) <= 1.0  # a fraction
    assert checkpoint.best_model_score is not None and checkpoint.best_model_path

    trainer.test(module, datamodule=data, ckpt_path="best")
    report = module.test_report
    assert isinstance(report, MetricReport)
    assert set(report.metrics) == _keys()
    assert 0.0 <= report.metrics["test/dice"] <= 100.0  # in %
    assert report.metrics["test/dice"] == pytest.approx(
        (report.metrics["test/dice/RV"] + report.metrics["test/dice/LV"]) / 2)
    assert [row["case"] for row in report.cases] == ["0001", "0002", "0003"]  # one row per patient
    assert sum(row["num_images"] for row in report.cases) == 5
    assert report.meta["data_kind"] == "synthetic" and "patient mode" in report.meta["protocol"]
    written = json.loads((tmp_path / "fit" / "test_metrics.json").read_text())
    assert written == json.loads(json.dumps(report.to_json()))
    assert trainer.callback_metrics["test/dice"].item() == pytest.approx(report.metrics["test/dice"])


def test_image_mode_reports_per_image(tmp_path):
    L.seed_everything(0)
    module = SliceSegmentationModule(TinyNet(), num_classes=3, eval_mode="slice")  # the release's name
    trainer = _trainer(tmp_path, "image")
    trainer.test(module, datamodule=TinySlices(eval_mode=None, test_images=3))
    assert module.eval_mode == "image"
    assert [row["case"] for row in module.test_report.cases] == ["0001_201", "0002_202", "0003_200"]
    assert set(module.test_report.metrics) == _keys()


def test_defaults_links_and_errors(tmp_path):
    module = SliceSegmentationModule(TinyNet(), num_classes=3)
    optimizer = module.optimizer_factory(module.parameters())
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 1e-5
    assert module.hparams.lr_schedule == "constant" and module.loss.ce_weight == module.loss.dice_weight == 1.0
    assert ("data.init_args.img_size", "model.init_args.net.init_args.img_size") in module.cli_links
    with pytest.raises(ValueError, match="eval_mode"):
        _trainer(tmp_path, "e1").test(module, datamodule=TinySlices(eval_mode=None))
    with pytest.raises(ValueError, match="num_classes"):
        _trainer(tmp_path, "e2").test(SliceSegmentationModule(TinyNet(4), num_classes=4), datamodule=TinySlices())


# ------------------------------------------------------------------ exact on 1 and 2 processes
SCENARIOS = [("odd", "patient", 5), ("single", "image", 1)]  # padding repeats; fewer images than processes


def _script(out: Path, devices: int) -> None:
    for name, mode, count in SCENARIOS:
        L.seed_everything(0)  # the same untrained weights on every process
        module = SliceSegmentationModule(TinyNet(), num_classes=3)
        data = TinySlices(eval_mode=mode, val_images=count, test_images=count)
        trainer = _trainer(out, name, devices=devices, strategy="ddp" if devices > 1 else "auto",
                           enable_checkpointing=False)
        trainer.validate(module, datamodule=data)
        val = float(trainer.callback_metrics["val/dice"])
        trainer.test(module, datamodule=data)
        if trainer.is_global_zero:
            (out / name / "val.json").write_text(json.dumps({"val/dice": val}))


def _run(out: Path, devices: int) -> dict:
    launcher = [sys.executable] if devices == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([*launcher, __file__, str(out), str(devices)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {name: {"test": json.loads((out / name / "test_metrics.json").read_text()),
                   "val": json.loads((out / name / "val.json").read_text())} for name, _, _ in SCENARIOS}


def test_two_processes_give_the_numbers_of_one(tmp_path):
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2)
    assert [c["case"] for c in one["odd"]["test"]["cases"]] == ["0001", "0002", "0003"]
    assert one["odd"]["test"]["meta"]["num_images"] == 5 and two["single"]["test"]["meta"]["num_images"] == 1
    for name, _, _ in SCENARIOS:
        assert two[name]["test"]["metrics"] == one[name]["test"]["metrics"]  # exactly
        assert two[name]["test"]["cases"] == one[name]["test"]["cases"]
        assert two[name]["val"] == one[name]["val"]


if __name__ == "__main__":
    _script(Path(sys.argv[1]), int(sys.argv[2]))
