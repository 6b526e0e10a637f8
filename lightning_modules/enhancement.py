"""Image enhancement as a task: whole-image evaluation with the release's padding, exact reports, result images.

:class:`EnhancementTask` is the base of GLARE's stage modules (:mod:`lightning_modules.glare_stages`,
:mod:`lightning_modules.glare_stage1`, :mod:`lightning_modules.glare_chain`). A subclass implements
``enhance(low) -> {name: image}``: ``low (B, 3, H, W)`` in [0, 1] (H, W multiples of 4) → one or more
named outputs ``(B, 3, H, W)``; the first name is the stage's own output (its metrics are the
unprefixed ones), the others are reported under ``<name>/`` (e.g. SimGLARE beside GLARE).

Evaluation (validation and test; spec §4.2):

* ``eval_padding="release"``: reflect-pad 20 px bottom and left (the release's inference scripts,
  :data:`~lightning_modules.enhancement_inference.GLARE_RELEASE_PADDING`), then to the next multiple
  of 4 (bottom/right; nothing for 600×400 LOL images), run, crop back; ``"multiple"``: only the
  padding to a multiple of 4.
* Metrics: :class:`~lightning_modules.metrics.enhancement.EnhancementEvaluator` (PSNR, SSIM, LPIPS
  when ``lpips_weights`` is given; plain and GT-mean corrected) per image, kept by image name,
  gathered over processes (:func:`~lightning_modules.distributed.gather_cases`), so the numbers are
  those of one process on any number of them.
* Validation logs ``val/psnr``, ``val/ssim``, ``val/psnr_gt_mean`` (the release's ``best_psnr``
  selection metric), ``val/ssim_gt_mean`` ...; test sets ``self.test_report`` (a
  :class:`~lightning_modules.metrics.MetricReport`: ``test/psnr``, ``test/ssim``,
  ``test/psnr_gt_mean``, ``test/ssim_gt_mean`` [, ``test/lpips``, ``test/lpips_gt_mean``], then
  ``test/<name>/...`` of the other outputs) published by
  :func:`~lightning_modules.callbacks.publish_test_report`.

:class:`EnhancementTriplets` draws input | output | reference rows of fixed validation / test images
(PNGs under ``<run>/triplets/`` and W&B images).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lightning_modules.callbacks import log_figure, publish_test_report, run_dir
from lightning_modules.compile_switch import compile_network
from lightning_modules.distributed import gather_cases
from lightning_modules.enhancement_inference import GLARE_RELEASE_PADDING, Padding, padding_to_multiple
from lightning_modules.grad_layout import align_gradient_strides
from lightning_modules.metrics.enhancement import EnhancementEvaluator, enhancement_report

__all__ = ["EnhancementTask", "EnhancementTriplets", "multistep_milestones", "padded_call", "triplet_figure"]

EvalPadding = Literal["release", "multiple"]


def multistep_milestones(total_steps: int, fractions: Sequence[float]) -> list[int]:
    """The release's ``lr_steps_rel`` → ``MultiStepLR`` milestones: ``int(f · total)`` optimizer steps."""
    if total_steps < 1:
        raise ValueError(f"the LR schedule needs a known number of steps (trainer.max_steps), got {total_steps}")
    return [int(f * total_steps) for f in fractions]


def padded_call(fn, low: Tensor, padding: EvalPadding = "release", multiple: int = 4) -> dict[str, Tensor]:
    """``fn(padded low) -> {name: (B, 3, H', W')}``, each output cropped back to ``low``'s ``(H, W)`` (docstring)."""
    if padding not in ("release", "multiple"):
        raise ValueError(f"eval_padding must be 'release' or 'multiple', got {padding!r}")
    outer: Padding = GLARE_RELEASE_PADDING if padding == "release" else Padding()
    x = outer.apply(low)
    inner = padding_to_multiple(x.shape[-2], x.shape[-1], multiple)
    outputs = fn(inner.apply(x))
    return {name: outer.crop(inner.crop(y)) for name, y in outputs.items()}


class EnhancementTask(L.LightningModule):
    """Validation / test of an enhancement network (module docstring). Subclasses define :meth:`enhance`.

    Args:
        eval_padding: ``"release"`` or ``"multiple"`` (module docstring).
        lpips_weights: AlexNet LPIPS weights file (``None``: LPIPS skipped with a message).
        compile, compile_mode: ``torch.compile`` ``self.net`` (the parts of its ``compile_parts()``, e.g.
            GLARE's) in place (:mod:`lightning_modules.compile_switch`); checkpoints keep their keys.
    """

    #: the batch entries of the evaluated input and its reference
    input_key, target_key = "image", "target"

    def __init__(self, eval_padding: EvalPadding = "release", lpips_weights: str | None = None,
                 compile: bool = False, compile_mode: str | None = None) -> None:
        super().__init__()
        if eval_padding not in ("release", "multiple"):
            raise ValueError(f"eval_padding must be 'release' or 'multiple', got {eval_padding!r}")
        self.eval_padding = eval_padding
        self.compile_net, self.compile_mode = bool(compile), compile_mode
        self.lpips_weights = lpips_weights
        self._evaluator: EnhancementEvaluator | None = None
        self._records: dict[str, dict[str, dict[str, float]]] = {}
        self.test_report = None

    def configure_model(self) -> None:
        align_gradient_strides(self)  # before DDP wraps the module: no bucket-stride warning
        if self.compile_net:
            compile_network(self, self.net, self.compile_mode)  # in place: checkpoints keep their keys

    # ------------------------------------------------------------------ to implement
    def enhance(self, low: Tensor) -> dict[str, Tensor]:
        """``low (B, 3, H, W)`` → ``{name: (B, 3, H, W)}``, the stage's own output first."""
        raise NotImplementedError

    def forward(self, low: Tensor) -> Tensor:
        """The stage's own output on a whole image, with the evaluation padding."""
        return next(iter(self.enhance_padded(low).values()))

    # ------------------------------------------------------------------ evaluation
    @property
    def evaluator(self) -> EnhancementEvaluator:
        if self._evaluator is None:
            self._evaluator = EnhancementEvaluator(self.lpips_weights, device=self.device)
        return self._evaluator

    @torch.no_grad()
    def enhance_padded(self, low: Tensor) -> dict[str, Tensor]:
        return padded_call(self.enhance, low, self.eval_padding)

    def _eval_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        low, target = batch[self.input_key], batch[self.target_key]
        outputs = self.enhance_padded(low)
        cases = batch.get("case") or [f"batch{batch_idx:06d}_{i}" for i in range(len(low))]
        for name, out in outputs.items():
            for case, row in self.evaluator.records(out.float(), target.float(), cases).items():
                self._records.setdefault(name, {})[case] = row
        return outputs

    def _report(self, prefix: str):
        """Gathered records → (report of the first output, {name: report} of every output)."""
        names = list(self._records)
        reports = {name: enhancement_report(gather_cases(self._records[name]), prefix=None) for name in names}
        self._records = {}
        metrics: dict[str, float] = {}
        for i, name in enumerate(names):
            base = prefix if i == 0 else f"{prefix}/{name}"
            metrics.update({f"{base}/{k}": v for k, v in reports[name].metrics.items()})
        rows: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            for row in reports[name].cases:
                merged = rows.setdefault(row["case"], {"case": row["case"]})
                merged.update({(k if i == 0 else f"{name}/{k}"): v for k, v in row.items() if k != "case"})
        return metrics, list(rows.values()), reports

    def on_validation_epoch_start(self) -> None:
        self._records = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self._records:
            return
        metrics, _, _ = self._report("val")
        for key, value in metrics.items():  # equal on every rank (gathered): no reduction needed
            self.log(key, value, prog_bar=key == "val/psnr_gt_mean")

    def on_test_epoch_start(self) -> None:
        self._records = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        outputs = self._eval_step(batch, batch_idx)
        return {"outputs": outputs}

    def on_test_epoch_end(self) -> None:
        from lightning_modules.metrics import MetricReport

        metrics, rows, reports = self._report("test")
        first = next(iter(reports.values()))
        meta = {**first.meta, "outputs": list(reports), "eval_padding": self.eval_padding, **self.report_meta()}
        self.test_report = MetricReport(metrics=metrics, cases=rows, meta=meta)
        self.test_metrics_path = publish_test_report(self, self.test_report)

    def report_meta(self) -> dict[str, Any]:
        """What the test report says about the run (data kind, model selection); subclasses add to it."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return {"data_kind": "synthetic" if getattr(datamodule, "is_synthetic", False) else "real",
                "selection": getattr(datamodule, "selection_note", None)}


# ---------------------------------------------------------------------------------------------- images
def _hwc(image: Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)


def triplet_figure(rows: Sequence[tuple[Tensor, Tensor, Tensor]], titles: Sequence[str],
                   headers: Sequence[str] = ("input", "output", "reference")):
    """One row per image: ``(input, output, reference)``, each ``(3, H, W)`` in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows) + 0.3), squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(_hwc(image))
            ax.set_axis_off()
            if r == 0:
                ax.set_title(headers[c])
        axes[r, 0].text(0.02, 0.98, titles[r], transform=axes[r, 0].transAxes, va="top", fontsize=8, color="white")
    fig.tight_layout()
    return fig


class EnhancementTriplets(L.Callback):
    """Input | output | reference of the first ``num_samples`` validation and test images.

    Validation: every ``every_n_epochs`` epochs and at the end of training →
    ``<run>/triplets/val_step<S>.png``; test: the first test batches → ``<run>/triplets/test.png``.
    Each figure goes to W&B too (``val/triplets``, ``test/triplets``). The output shown is the
    module's first (own) output, evaluated with its evaluation padding.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"num_samples and every_n_epochs must be >= 1, got {num_samples}, {every_n_epochs}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self._test_rows: list = []
        self._test_titles: list[str] = []

    def _draw(self, trainer: L.Trainer, pl_module: EnhancementTask, dataset, key: str, name: str) -> None:
        rows, titles = [], []
        for i in range(min(self.num_samples, len(dataset))):
            item = dataset[i]
            low = torch.as_tensor(item[pl_module.input_key])[None].to(pl_module.device)
            out = pl_module(low)[0]
            rows.append((low[0], out, torch.as_tensor(item[pl_module.target_key])))
            titles.append(str(item.get("case", i)))
        fig = triplet_figure(rows, titles)
        log_figure(trainer, fig, key, run_dir(trainer) / "triplets" / f"{name}.png", name)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = getattr(trainer.datamodule, "val_dataset", None)
        if trainer.sanity_checking or not dataset or not isinstance(pl_module, EnhancementTask):
            return
        last = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if not last and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, dataset, "val/triplets", f"val_step{trainer.global_step:06d}")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test_rows, self._test_titles = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or "outputs" not in outputs or len(self._test_rows) >= self.num_samples:
            return
        out = next(iter(outputs["outputs"].values()))
        cases = batch.get("case") or [str(batch_idx)] * len(out)
        for i in range(min(len(out), self.num_samples - len(self._test_rows))):
            self._test_rows.append((batch[pl_module.input_key][i], out[i], batch[pl_module.target_key][i]))
            self._test_titles.append(str(cases[i]))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._test_rows:
            fig = triplet_figure(self._test_rows, self._test_titles)
            log_figure(trainer, fig, "test/triplets", run_dir(trainer) / "triplets" / "test.png", "test")
        self._test_rows, self._test_titles = [], []
