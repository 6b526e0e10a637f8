"""Small named callbacks (exact resumption, segmentation overlays) and the W&B logging helpers they share."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from lightning_modules.visualize import display_image, overlay_figure


class RNGStateCheckpoint(L.Callback):
    """Save the Python, NumPy and torch RNG states in checkpoints and restore them on resume.

    Lightning does not store RNG states, so dropout / stochastic depth after a resume
    would otherwise differ from the uninterrupted run. Stored as tensors and lists
    only, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy = state_dict["numpy"]
        np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                             numpy["has_gauss"], numpy["cached_gaussian"]))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def run_dir(trainer: L.Trainer) -> Path:
    """Where a run's files go: the first logger's folder, else the trainer's root dir."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def wandb_loggers(trainer: L.Trainer) -> list:
    """The trainer's ``WandbLogger`` instances (none when W&B is not configured)."""
    return [logger for logger in trainer.loggers if type(logger).__name__ == "WandbLogger"]


def log_figure(trainer: L.Trainer, fig, key: str, path: Path, caption: str) -> None:
    """Save a figure as PNG beside the run (rank 0) and send it to every W&B logger."""
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        for logger in wandb_loggers(trainer):
            logger.log_image(key=key, images=[str(path)], caption=[caption])
    import matplotlib.pyplot as plt

    plt.close(fig)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    return np.zeros(image.shape, np.uint8) if hi <= lo else ((image - lo) / (hi - lo) * 255).round().astype(np.uint8)


def log_masks(trainer: L.Trainer, key: str, images, labels, predictions, class_names, captions) -> None:
    """W&B's interactive overlay: ``wandb.Image(image, masks={"ground_truth": ..., "prediction": ...})``.

    images: (H, W) floats; labels / predictions: (H, W) integer class maps; ``class_names`` index = label.
    """
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    legend = {i: str(name) for i, name in enumerate(class_names)}
    masks = [{"ground_truth": {"mask_data": np.asarray(gt, dtype=np.int64), "class_labels": legend},
              "prediction": {"mask_data": np.asarray(pr, dtype=np.int64), "class_labels": legend}}
             for gt, pr in zip(labels, predictions, strict=True)]
    for logger in loggers:
        logger.log_image(key=key, images=[_to_uint8(im) for im in images], masks=masks, caption=list(captions))


def log_case_table(trainer: L.Trainer, key: str, report) -> None:
    """A :class:`~lightning_modules.metrics.MetricReport`'s per-case rows as a ``wandb.Table``."""
    columns = report.case_columns()
    rows = [[row.get(column) for column in columns] for row in report.cases]
    for logger in wandb_loggers(trainer):
        logger.log_table(key=key, columns=columns, data=rows)


def publish_test_report(module: L.LightningModule, report) -> Path:
    """Log a task's test report, send its cases to W&B as a table, write ``test_metrics.json`` (rank 0).

    Call on every rank (``trainer.log_dir`` is broadcast); the values must already be equal
    on every rank (gathered), so they are logged from rank 0 only. Returns the JSON's path.
    """
    trainer = module.trainer
    for key, value in report.metrics.items():
        module.log(key, value, rank_zero_only=True)
    log_case_table(trainer, "test/cases", report)
    path = run_dir(trainer) / "test_metrics.json"
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    return path


class SegmentationOverlays(L.Callback):
    """Image | ground truth | prediction overlays of fixed slices, with the class legend.

    Validation: the ``num_samples`` validation slices with the most classes (chosen
    once, so every epoch shows the same slices) → ``overlays/val_epoch<E>.png``, every
    ``every_n_epochs`` epochs and after the last one (drawing costs far more than a small
    validation set's forward passes).
    Test: the slices with the most classes of the first test volume → ``overlays/test_<case>.png``.
    Each figure also goes to W&B twice: the PNG, and one ``wandb.Image`` per slice
    with ``masks=`` (ground truth and prediction, class labels), W&B's interactive overlay.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 10) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self._val_indices: list[int] | None = None

    def _draws_at(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs - 1
        return last or (epoch + 1) % self.every_n_epochs == 0

    def _class_names(self, trainer: L.Trainer, num_classes: int) -> list[str]:
        names = getattr(trainer.datamodule, "class_names", None)
        return list(names) if names else [f"class{i}" for i in range(num_classes)]

    def _pick(self, labels: list[np.ndarray]) -> list[int]:
        richness = [(len(np.unique(lab)), int((lab > 0).sum()), -i) for i, lab in enumerate(labels)]
        order = sorted(range(len(labels)), key=lambda i: richness[i], reverse=True)
        return sorted(order[: self.num_samples])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = getattr(trainer.datamodule, "val_dataset", None)
        if trainer.sanity_checking or dataset is None or len(dataset) == 0 or not self._draws_at(trainer):
            return
        if self._val_indices is None:
            self._val_indices = self._pick([np.asarray(dataset[i]["label"]) for i in range(len(dataset))])
        samples = [dataset[i] for i in self._val_indices]
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).to(pl_module.device)
        with torch.no_grad():
            preds = pl_module(images).argmax(1).cpu().numpy()
        labels = [np.asarray(s["label"]) for s in samples]
        images = [display_image(s["image"]) for s in samples]
        names = self._class_names(trainer, pl_module.num_classes)
        titles = [f"{s.get('case', '')} slice {int(s.get('slice', i))}"
                  for i, s in zip(self._val_indices, samples, strict=True)]
        fig = overlay_figure(images, labels, list(preds), names, titles=titles)
        epoch = trainer.current_epoch
        log_figure(trainer, fig, "val/overlays", run_dir(trainer) / "overlays" / f"val_epoch{epoch:03d}.png",
                   f"epoch {epoch}")
        log_masks(trainer, "val/masks", images, labels, list(preds), names, [f"epoch {epoch}: {t}" for t in titles])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or not isinstance(outputs, dict) or "prediction" not in outputs:
            return
        image, label, pred = outputs["image"], outputs["label"], outputs["prediction"]
        idx = self._pick(list(label))
        case = outputs.get("case", "case")
        names = self._class_names(trainer, pl_module.num_classes)
        titles = [f"{case} slice {i}" for i in idx]
        fig = overlay_figure([image[i] for i in idx], [label[i] for i in idx], [pred[i] for i in idx], names,
                             titles=titles)
        log_figure(trainer, fig, "test/overlays", run_dir(trainer) / "overlays" / f"test_{case}.png", case)
        log_masks(trainer, "test/masks", [image[i] for i in idx], [label[i] for i in idx], [pred[i] for i in idx],
                  names, titles)
