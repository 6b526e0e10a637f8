"""Low-light enhancement metrics of the GLARE release (``test_stage3.py``, ``infer_dataset_*.py`` @ 7ea5027).

Per image, with ``out`` the network output and ``gt`` the 8-bit normal-light image as float
in [0, 1] (spec §4.2):

* **GT-mean brightness correction** (:func:`gt_mean_correct`, the LLFlow/KinD convention the
  release applies before *every* metric): ``out ← clip(out_c · m(gt) / m(out_c), 0, 1)`` with
  ``out_c = clip(out, 0, 1)`` and ``m`` the mean of OpenCV's ``COLOR_BGR2GRAY`` of the image.
  The release hands **RGB** arrays to ``BGR2GRAY``, so its gray is ``0.114 R + 0.587 G +
  0.299 B`` (:data:`RELEASE_GRAY_WEIGHTS`; ``gray_weights=BT601_GRAY_WEIGHTS`` is the switch).
* **PSNR** ``10 log10(1 / MSE)`` on the float images, data range 1, MSE over all pixels and
  channels, in float64 (written out: torchmetrics' ``peak_signal_noise_ratio`` passes
  ``10 / ln 10`` through a float32 tensor, 4e-8 relative, ~1e-6 dB); a perfect match scores
  the release's **100 dB** (its ``PSNR`` returns 100 for MSE 0; ``psnr_cap=None`` gives ∞).
* **SSIM** on the images rounded to uint8 (skimage ``img_as_ubyte``: ``rint(255 x)``), the
  MATLAB-style ``calculate_ssim``: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, data range
  255, per channel, mean over the **valid** region only (the 5-px border of the map left
  out), mean of the 3 channels. Computed with torchmetrics'
  ``structural_similarity_index_measure(..., return_full_image=True)`` in float64 and the map
  cropped here: torchmetrics 1.9 averages the whole map, whose 5-px border comes from
  reflection padding, which the release never computes (measured on 48 x 64 pairs: 4e-4 to
  1.5e-3 of SSIM, shrinking with the image; :func:`ssim_uint8` with ``valid_only=False`` is
  torchmetrics' number).
  The only remaining difference is torchmetrics clamping negative variances to 0 (float
  rounding only: below 1e-12 on 8-bit images, see the tests).
* **LPIPS** (AlexNet, ``lpips`` 0.1) on the uint8-rounded images mapped to [-1, 1], when the
  user gives the weights (:func:`load_lpips_alex`); torchmetrics' LPIPS port, never downloading.

Each is reported twice, under its own name: plainly (``test/psnr``, ``test/ssim``,
``test/lpips``: the same metrics on ``clip(out, 0, 1)``, as ``test_stage2.py``'s uncorrected
rows) and with the correction (``test/psnr_gt_mean``, ``test/ssim_gt_mean``,
``test/lpips_gt_mean``: the paper's numbers). Means are over images, from per-image records
keyed by image name, so records of N processes can be gathered exactly first
(:func:`lightning_modules.distributed.gather_cases`) and give the numbers of 1 process.

Not reproduced: ``test_stage3.py``'s extra ``1_PSNR`` / ``1_SSIM`` columns (gray mean of the GT
over the mean of all RGB values of the raw output, skimage metrics on truncated uint8) and
the release's float32 arithmetic of the correction (float64 here; differences ~1e-7 dB).
A black output (gray mean 0) is left uncorrected; the release divides by zero there (NaN).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from lightning_modules.metrics.summary import MetricReport

__all__ = [
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

#: weights on (R, G, B) of the release's gray: OpenCV's BGR2GRAY applied to RGB data
RELEASE_GRAY_WEIGHTS: tuple[float, float, float] = (0.114, 0.587, 0.299)
#: ITU-R BT.601 luma weights on (R, G, B): BGR2GRAY on BGR data
BT601_GRAY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
ENHANCEMENT_SCORES: tuple[str, ...] = ("psnr", "ssim", "lpips")
_SSIM_BORDER = 5  # (11 - 1) / 2: the release keeps the valid part of the filtered maps


def _check_images(output: Tensor, target: Tensor) -> None:
    if output.ndim != 4 or output.shape[1] != 3 or output.shape != target.shape:
        raise ValueError(f"expected output and target of the same shape (B, 3, H, W); got {tuple(output.shape)} "
                         f"and {tuple(target.shape)}")


def gray_mean(images: Tensor, weights: Sequence[float] = RELEASE_GRAY_WEIGHTS) -> Tensor:
    """Mean gray level per image: ``images (B, 3, H, W)`` → ``(B,)``, gray = Σ_c w_c · x_c."""
    w = torch.as_tensor(weights, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(dim=1).mean(dim=(1, 2))


def gt_mean_correct(output: Tensor, target: Tensor, weights: Sequence[float] = RELEASE_GRAY_WEIGHTS) -> Tensor:
    """``clip(out_c · m(gt) / m(out_c), 0, 1)`` per image, ``out_c = clip(output, 0, 1)`` (module docstring).

    ``output``, ``target``: ``(B, 3, H, W)`` RGB in [0, 1]; returns ``out_c`` rescaled, float64.
    """
    _check_images(output, target)
    out = output.detach().to(torch.float64).clamp(0.0, 1.0)
    m_out = gray_mean(out, weights)
    ratio = gray_mean(target.detach().to(torch.float64), weights) / torch.where(m_out > 0, m_out, 1.0)
    ratio = torch.where(m_out > 0, ratio, 1.0)
    return (out * ratio.view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def to_uint8_levels(images: Tensor) -> Tensor:
    """skimage's ``img_as_ubyte`` on [0, 1] floats: ``rint(255 x)``, as float64 levels 0..255."""
    return torch.round(images.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0)


def psnr(output: Tensor, target: Tensor, cap: float | None = 100.0) -> Tensor:
    """PSNR per image (data range 1), ``(B,)`` float64; MSE 0 scores ``cap`` (the release's 100) or ∞."""
    _check_images(output, target)
    # by hand: torchmetrics' peak_signal_noise_ratio takes 10 / ln 10 through a float32 tensor (~1e-6 dB off)
    mse = (output.detach().to(torch.float64) - target.detach().to(torch.float64)).square().mean(dim=(1, 2, 3))
    values = 10.0 * torch.log10(1.0 / mse)
    return values if cap is None else torch.where(torch.isinf(values), torch.full_like(values, cap), values)


def ssim_uint8(output: Tensor, target: Tensor, valid_only: bool = True) -> Tensor:
    """The release's MATLAB-style SSIM per image on uint8-rounded images, ``(B,)`` float64 (module docstring).

    ``valid_only=False``: torchmetrics' own mean over the whole, reflection-padded map.
    """
    _check_images(output, target)
    if min(output.shape[-2:]) <= 2 * _SSIM_BORDER:
        raise ValueError(f"SSIM with an 11 x 11 window needs images larger than 10 x 10, got {tuple(output.shape)}")
    a, b = to_uint8_levels(output), to_uint8_levels(target)
    whole, ssim_map = structural_similarity_index_measure(
        a, b, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0, k1=0.01, k2=0.03,
        reduction="none", return_full_image=True)
    if not valid_only:
        return whole
    k = _SSIM_BORDER
    return ssim_map[..., k:-k, k:-k].mean(dim=(1, 2, 3))


def load_lpips_alex(weights: str | Path) -> nn.Module:
    """torchmetrics' LPIPS (AlexNet, ``lpips`` 0.1) with weights from a user-given file; never downloads.

    ``weights``: either a whole LPIPS state dict (keys ``net.slice*``, ``lin*``; e.g. saved from
    ``lpips.LPIPS(net="alex")``) or torchvision's AlexNet ImageNet file
    (``alexnet-owt-7be5be79.pth``, keys ``features.*``), whose linear heads then come from the
    ``alex.pth`` that ships inside torchmetrics. Call as ``net(x, y)`` with ``x, y (B, 3, H, W)``
    in [-1, 1]; returns ``(B, 1, 1, 1)``.
    """
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path.absolute()}: LPIPS weights file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if any(k.startswith("features.") for k in state):  # torchvision AlexNet: its features into the slices
        net = _NoTrainLpips(net="alex", pretrained=True, pnet_rand=True)  # linear heads: torchmetrics' alex.pth
        slices = {**dict.fromkeys(range(0, 2), 1), **dict.fromkeys(range(2, 5), 2), **dict.fromkeys(range(5, 8), 3),
                  **dict.fromkeys(range(8, 10), 4), **dict.fromkeys(range(10, 12), 5)}
        mapped = {}
        for key, value in state.items():
            if key.startswith("features."):
                index = int(key.split(".")[1])
                mapped[f"slice{slices[index]}.{key.split('.', 1)[1]}"] = value
        net.net.load_state_dict(mapped, strict=True)
    else:
        net = _NoTrainLpips(net="alex", pretrained=False, pnet_rand=True)
        result = net.load_state_dict({k: v for k, v in state.items() if not k.startswith("scaling_layer.")},
                                     strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("scaling_layer.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{path.absolute()}: not an AlexNet LPIPS state dict (missing {missing[:4]}, "
                             f"unexpected {result.unexpected_keys[:4]})")
    return net.eval()


class EnhancementEvaluator:
    """Per-image records of the release's metrics, both conventions (module docstring).

    Args:
        lpips_weights: the AlexNet LPIPS weights file (:func:`load_lpips_alex`); ``None`` or a
            missing file skips LPIPS with one message on stderr.
        gray_weights: the gray of the GT-mean correction (:data:`RELEASE_GRAY_WEIGHTS`).
        psnr_cap: the score of a perfect match (100, as released; ``None``: ∞).
        device: where LPIPS runs.
    """

    def __init__(self, lpips_weights: str | None = None, gray_weights: Sequence[float] = RELEASE_GRAY_WEIGHTS,
                 psnr_cap: float | None = 100.0, device: torch.device | str = "cpu"):
        self.gray_weights = tuple(float(w) for w in gray_weights)
        self.psnr_cap = psnr_cap
        self.device = torch.device(device)
        self.lpips: nn.Module | None = None
        self.skip_message: str | None = None
        if lpips_weights is None:
            self.skip_message = "LPIPS skipped: no AlexNet LPIPS weights file given (lpips_weights)"
        elif not Path(lpips_weights).expanduser().is_file():
            self.skip_message = f"LPIPS skipped: weights file {Path(lpips_weights).expanduser().absolute()} not found"
        else:
            self.lpips = load_lpips_alex(lpips_weights).to(self.device)
        if self.skip_message:
            print(self.skip_message, file=sys.stderr, flush=True)

    @torch.no_grad()
    def _lpips(self, output: Tensor, target: Tensor) -> Tensor:
        assert self.lpips is not None
        a = to_uint8_levels(output).float().to(self.device) / 127.5 - 1.0
        b = to_uint8_levels(target).float().to(self.device) / 127.5 - 1.0
        return self.lpips(a, b).reshape(-1).double().cpu()

    @torch.no_grad()
    def records(self, output: Tensor, target: Tensor, cases: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{case: {"psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean"[, "lpips", "lpips_gt_mean"]}}``.

        ``output``: the network output ``(B, 3, H, W)`` (any range; clipped to [0, 1]); ``target``:
        the 8-bit normal-light image in [0, 1] (re-rounded to its 8-bit levels, so a float32
        ``/255`` target gives the release's float64 ``/255``).
        """
        _check_images(output, target)
        if len(cases) != output.shape[0]:
            raise ValueError(f"got {len(cases)} case names for a batch of {output.shape[0]}")
        gt = to_uint8_levels(target) / 255.0
        plain = output.detach().to(torch.float64).clamp(0.0, 1.0)
        corrected = gt_mean_correct(output, gt, self.gray_weights)
        scores = {}
        for suffix, image in (("", plain), ("_gt_mean", corrected)):
            scores[f"psnr{suffix}"] = psnr(image, gt, self.psnr_cap)
            scores[f"ssim{suffix}"] = ssim_uint8(image, gt)
            if self.lpips is not None:
                scores[f"lpips{suffix}"] = self._lpips(image, gt)
        order = [f"{m}{s}" for s in ("", "_gt_mean") for m in ENHANCEMENT_SCORES if f"{m}{s}" in scores]
        return {str(case): {k: float(scores[k][i]) for k in order} for i, case in enumerate(cases)}


def enhancement_report(records: Mapping[str, Mapping[str, float]], prefix: str | None = "test",
                       meta: Mapping[str, Any] | None = None) -> MetricReport:
    """Means over images of the per-image :meth:`EnhancementEvaluator.records` as a :class:`MetricReport`.

    metrics: ``<prefix>/psnr``, ``<prefix>/ssim``, ``<prefix>/lpips`` (if computed), then the
    ``_gt_mean`` ones; cases: ``{"case", <score>...}`` in the records' order (sort them, or use
    :func:`~lightning_modules.distributed.gather_cases`, for an order independent of processes).
    """
    if not records:
        raise ValueError("enhancement_report: no images given")
    keys = list(next(iter(records.values())))
    for case, row in records.items():
        if list(row) != keys:
            raise ValueError(f"case {case!r} has scores {list(row)}, the first case {keys}")
    n = len(records)
    means = {k: sum(float(row[k]) for row in records.values()) / n for k in keys}
    metrics = {(f"{prefix}/{k}" if prefix else k): v for k, v in means.items()}
    info: dict[str, Any] = {
        "num_images": n,
        "convention": "GLARE release: PSNR on float images (data range 1, 100 dB for a perfect match), "
                      "MATLAB-style SSIM on uint8-rounded images, LPIPS AlexNet on uint8-rounded images; "
                      "*_gt_mean after the GT-mean brightness correction (the paper's numbers)",
        "lpips": "lpips" in keys,
    }
    info.update(meta or {})
    return MetricReport(metrics=metrics, cases=[{"case": str(c), **dict(r)} for c, r in records.items()], meta=info)
