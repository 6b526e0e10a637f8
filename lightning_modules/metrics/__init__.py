"""Evaluation metrics, one module per named evaluation convention.

* ``surface`` -- medpy's Dice and pooled-direction HD95 (hand-written: no library pools like medpy).
* ``transunet`` -- TransUNet per-case rules (Synapse, ACDC): empty-mask rules, mean over cases then classes.
* ``pixel_pooled`` -- binary DSC/SE/SP/ACC from counts pooled over a test set (skin lesions), torchmetrics.
* ``convformer_protocol`` -- the ConvFormer release's 2-D protocol: per-patient (ACDC) or per-image (ISIC)
  Dice/IoU/ACC/SE/SP, its row-vector L1 "HD" (``row_hausdorff_l1``) and a 2-D HD95.
* ``enhancement`` -- the GLARE release's low-light metrics: PSNR, MATLAB-style SSIM, LPIPS, each plain and
  after the GT-mean brightness correction (``test/psnr`` and ``test/psnr_gt_mean``, ...).
* ``summary`` -- the flat ``'/'`` metric keys (``flatten_metrics``) and the task-independent ``MetricReport``.

Next conventions go in their own modules: ``miou.py`` (dataset-accumulated
confusion matrix, mIoU), ``classification.py`` (top-k accuracy via torchmetrics),
``image_quality.py`` (PSNR/SSIM via torchmetrics).

Every public name is re-exported here (``from lightning_modules.metrics import
case_dice_hd95``).
"""
from __future__ import annotations

from lightning_modules.metrics.convformer_protocol import (
    CONVFORMER_SCORES,
    EvalMode,
    case_scores,
    class_counts,
    convformer_report,
    image_record,
    mean_foreground_dice,
    normalize_eval_mode,
    patient_id,
    row_hausdorff_l1,
    slice_hd95,
)
from lightning_modules.metrics.enhancement import (
    BT601_GRAY_WEIGHTS,
    ENHANCEMENT_SCORES,
    RELEASE_GRAY_WEIGHTS,
    EnhancementEvaluator,
    enhancement_report,
    gray_mean,
    gt_mean_correct,
    load_lpips_alex,
    psnr,
    ssim_uint8,
    to_uint8_levels,
)
from lightning_modules.metrics.pixel_pooled import (
    BinaryConfusionAccumulator,
    PooledBinaryMetrics,
    binary_confusion_counts,
    binary_confusion_metrics,
    confusion_metrics_from_counts,
)
from lightning_modules.metrics.summary import MetricReport, flatten_metrics, transunet_report
from lightning_modules.metrics.surface import (
    HD95Method,
    crop_to_union,
    medpy_dice,
    medpy_hd95,
    medpy_hd95_voxel,
    surface_voxels,
)
from lightning_modules.metrics.transunet import (
    case_dice_hd95,
    flatten_summary,
    per_class_case_metrics,
    summarize_cases,
)

__all__ = [
    # surface
    "HD95Method",
    "medpy_dice",
    "medpy_hd95",
    "medpy_hd95_voxel",
    "surface_voxels",
    "crop_to_union",
    # transunet
    "case_dice_hd95",
    "per_class_case_metrics",
    "summarize_cases",
    "flatten_summary",
    # pixel_pooled
    "binary_confusion_counts",
    "confusion_metrics_from_counts",
    "binary_confusion_metrics",
    "PooledBinaryMetrics",
    "BinaryConfusionAccumulator",
    # summary
    "flatten_metrics",
    "MetricReport",
    "transunet_report",
    # convformer_protocol
    "EvalMode",
    "CONVFORMER_SCORES",
    "normalize_eval_mode",
    "patient_id",
    "class_counts",
    "row_hausdorff_l1",
    "slice_hd95",
    "image_record",
    "case_scores",
    "mean_foreground_dice",
    "convformer_report",
    # enhancement
    "RELEASE_GRAY_WEIGHTS",
    "BT601_GRAY_WEIGHTS",
    "ENHANCEMENT_SCORES",
    "gray_mean",
    "gt_mean_correct",
    "to_uint8_levels",
    "psnr",
    "ssim_uint8",
    "load_lpips_alex",
    "EnhancementEvaluator",
    "enhancement_report",
]
