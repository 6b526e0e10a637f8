"""Toy classification task: a registered MLP, a datamodule with a seed, and a module with a MetricReport.

It exists to prove the task contract: the ablation runner, results, render and W&B
logging take it without knowing it is not segmentation. Everything is in memory.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.callbacks import log_case_table
from lightning_modules.metrics import MetricReport, flatten_metrics
from models.registry import register_model


class ToyMLP(nn.Module):
    """x: (B, in_features) → logits (B, num_classes)."""

    def __init__(self, num_classes: int = 3, in_features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_model(input_size=(8,), paper="toy", task="classification")
def toy_mlp_test(**kwargs) -> ToyMLP:
    return ToyMLP(**kwargs)


class ToyBlobs(L.LightningDataModule):
    """Three Gaussian blobs in 8-D; ``seed`` (linked from ``seed_everything``) draws them."""

    num_classes = 3

    def __init__(self, seed: int = 0, samples: int = 96, batch_size: int = 16) -> None:
        super().__init__()
        self.seed, self.samples, self.batch_size = seed, samples, batch_size

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(1000)  # the data set itself is fixed; `seed` orders the batches
        centres = torch.randn(self.num_classes, 8, generator=g) * 3
        y = torch.arange(self.samples) % self.num_classes
        x = centres[y] + torch.randn(self.samples, 8, generator=g)
        cut = self.samples * 3 // 4
        self.train_set, self.test_set = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)


class ToyClassification(L.LightningModule):
    """Cross-entropy training; top-1 accuracy (torchmetrics) and one report row per test sample."""

    cli_links = (("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"),)

    def __init__(self, net: nn.Module, num_classes: int = 3, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.top1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_report: MetricReport | None = None
        self._rows: list[dict] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self.net(x), y))

    def on_test_epoch_start(self) -> None:
        self._rows = []
        self.top1.reset()

    def test_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x).argmax(1)
        self.top1.update(pred, y)
        for i, (p, t) in enumerate(zip(pred.tolist(), y.tolist(), strict=True)):
            self._rows.append({"case": f"sample{batch_idx * len(y) + i:03d}", "correct": float(p == t)})

    def on_test_epoch_end(self) -> None:
        metrics = flatten_metrics({"top1": float(self.top1.compute()) * 100.0}, prefix="test")
        self.test_report = MetricReport(metrics=metrics, cases=self._rows, meta={"protocol": "toy top-1"})
        for key, value in metrics.items():
            self.log(key, value)
        log_case_table(self.trainer, "test/cases", self.test_report)
