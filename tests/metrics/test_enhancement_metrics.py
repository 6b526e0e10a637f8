"""GLARE enhancement metrics (plain and GT-mean corrected) and the evaluation padding."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.distributed import gather_cases
from lightning_modules.enhancement_inference import GLARE_RELEASE_PADDING, Padding, padding_to_multiple, run_padded
from lightning_modules.metrics.enhancement import (
    BT601_GRAY_WEIGHTS,
    RELEASE_GRAY_WEIGHTS,
    EnhancementEvaluator,
    enhancement_report,
    gt_mean_correct,
    load_lpips_alex,
    psnr,
    ssim_uint8,
)

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _const(levels: tuple[int, int, int], h: int = 16, w: int = 20) -> torch.Tensor:
    """A (1, 3, h, w) image of constant 8-bit ``levels`` (R, G, B), as float in [0, 1]."""
    return torch.tensor(levels, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, h, w) / 255.0


def _release_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The release's ``calculate_ssim`` (``utils/utils2.py``) on uint8 (H, W, 3), written out with OpenCV."""
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.T)
    scores = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        f = lambda z: cv2.filter2D(z, -1, win)[5:-5, 5:-5]  # noqa: E731
        m1, m2 = f(x), f(y)
        s1, s2, s12 = f(x * x) - m1**2, f(y * y) - m2**2, f(x * y) - m1 * m2
        scores.append((((2 * m1 * m2 + C1) * (2 * s12 + C2)) / ((m1**2 + m2**2 + C1) * (s1 + s2 + C2))).mean())
    return float(np.mean(scores))


def test_constant_images_have_closed_form_psnr_and_ssim():
    out, gt = _const((128, 128, 128)), _const((64, 64, 64))
    assert psnr(out, gt).item() == pytest.approx(10 * math.log10(1 / (64 / 255) ** 2), abs=1e-9)
    expected_ssim = (2 * 128 * 64 + C1) / (128**2 + 64**2 + C1)  # no variance: the structure term is C2/C2
    assert ssim_uint8(out, gt).item() == pytest.approx(expected_ssim, abs=1e-12)
    assert psnr(gt, gt).item() == 100.0 and math.isinf(psnr(gt, gt, cap=None).item())  # the release's 100 dB


def test_gt_mean_correction_of_a_halved_image_restores_it_exactly():
    gt = torch.randint(0, 128, (2, 3, 24, 28), generator=torch.Generator().manual_seed(0)).double() * 2 / 255
    out = gt / 2  # same structure, half the brightness: the ratio is exactly 2
    assert torch.equal(gt_mean_correct(out, gt), gt)
    rec = EnhancementEvaluator().records(out, gt, ["a", "b"])
    assert rec["a"]["psnr_gt_mean"] == 100.0 and rec["a"]["ssim_gt_mean"] == pytest.approx(1.0, abs=1e-12)
    assert rec["a"]["psnr"] == pytest.approx(psnr(out, gt)[0].item()) and rec["a"]["psnr"] < 30
    assert list(rec["a"]) == ["psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean"]


def test_gt_mean_uses_the_release_gray_of_rgb_data_read_as_bgr():
    out, gt = _const((100, 0, 0)), _const((0, 0, 100))  # red output, blue ground truth
    ratio = (0.299 * 100) / (0.114 * 100)  # gray = 0.114 R + 0.587 G + 0.299 B
    corrected = gt_mean_correct(out, gt)
    assert corrected[0, 0, 0, 0].item() == pytest.approx(min(1.0, 100 / 255 * ratio), abs=1e-12)
    mse = ((min(1.0, 100 / 255 * ratio)) ** 2 + (100 / 255) ** 2) / 3
    rec = EnhancementEvaluator().records(out, gt, ["x"])["x"]
    assert rec["psnr_gt_mean"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    bt601 = gt_mean_correct(out, gt, BT601_GRAY_WEIGHTS)  # the switch: luma weights on RGB
    assert bt601[0, 0, 0, 0].item() == pytest.approx(100 / 255 * 0.114 / 0.299, abs=1e-12)
    assert RELEASE_GRAY_WEIGHTS == (0.114, 0.587, 0.299)
    black = gt_mean_correct(torch.zeros_like(gt), gt)  # gray mean 0: left as it is (the release: NaN)
    assert torch.equal(black, torch.zeros_like(black, dtype=torch.float64))


def test_ssim_equals_the_release_matlab_style_ssim_and_differs_from_torchmetrics_whole_map():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 40, 52, generator=g)
    out = (gt + 0.08 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    ours = ssim_uint8(out, gt)
    for i in range(2):
        a = np.rint(out[i].permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)
        b = np.rint(gt[i].permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)
        assert abs(ours[i].item() - _release_ssim(a, b)) < 1e-12
    whole = ssim_uint8(out, gt, valid_only=False)  # torchmetrics' own mean (reflection-padded border)
    assert 1e-5 < (whole - ours).abs().max().item() < 1e-2
    with pytest.raises(ValueError, match="larger than 10 x 10"):
        ssim_uint8(out[..., :10, :10], gt[..., :10, :10])


def test_psnr_is_on_float_images_and_the_target_on_its_8_bit_levels():
    gt = torch.randint(0, 256, (1, 3, 12, 12), generator=torch.Generator().manual_seed(2)).float() / 255
    out = (gt + 0.001).clamp(0, 1)  # a shift below one 8-bit level: PSNR sees it, SSIM's rounding does not
    want = 10 * math.log10(1 / ((out.double() - (gt * 255).round().double() / 255) ** 2).mean().item())
    assert EnhancementEvaluator().records(out, gt, ["c"])["c"]["psnr"] == pytest.approx(want, abs=1e-6)


def test_report_means_rows_and_names():
    records = {"b": {"psnr": 20.0, "ssim": 0.5, "psnr_gt_mean": 22.0, "ssim_gt_mean": 0.6},
               "a": {"psnr": 30.0, "ssim": 0.7, "psnr_gt_mean": 31.0, "ssim_gt_mean": 0.8}}
    report = enhancement_report(records)
    assert report.metrics == {"test/psnr": 25.0, "test/ssim": pytest.approx(0.6), "test/psnr_gt_mean": 26.5,
                              "test/ssim_gt_mean": pytest.approx(0.7)}
    assert [r["case"] for r in report.cases] == ["b", "a"] and report.meta["num_images"] == 2
    assert not report.meta["lpips"]
    with pytest.raises(ValueError, match="has scores"):
        enhancement_report({"a": {"psnr": 1.0}, "b": {"ssim": 1.0}})


def test_lpips_is_skipped_with_one_message_or_loaded_from_a_user_file(tmp_path, capsys):
    assert EnhancementEvaluator().lpips is None
    assert "LPIPS skipped: no AlexNet LPIPS weights file given" in capsys.readouterr().err
    EnhancementEvaluator(str(tmp_path / "missing.pth"))
    assert "not found" in capsys.readouterr().err
    from torchvision.models import alexnet

    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")  # torchvision's file layout
    evaluator = EnhancementEvaluator(str(tmp_path / "alexnet.pth"))
    assert capsys.readouterr().err == ""
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    out = (gt * 0.5 + 0.1 * torch.rand(gt.shape, generator=g)).clamp(0, 1)
    rec = evaluator.records(out, gt, ["p", "q"])
    assert list(rec["p"]) == ["psnr", "ssim", "lpips", "psnr_gt_mean", "ssim_gt_mean", "lpips_gt_mean"]
    assert rec["p"]["lpips"] > 0 and evaluator.records(gt, gt, ["p", "q"])["p"]["lpips"] == 0.0
    torch.save(evaluator.lpips.state_dict(), tmp_path / "lpips_alex.pth")  # a whole LPIPS state dict
    again = load_lpips_alex(tmp_path / "lpips_alex.pth")
    a, b = gt * 2 - 1, out * 2 - 1
    assert torch.equal(again(a, b), evaluator.lpips(a, b))
    torch.save({"junk.weight": torch.zeros(1)}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="not an AlexNet LPIPS state dict"):
        load_lpips_alex(tmp_path / "junk.pth")


# ----------------------------------------------------------------------------- N processes


def _images(n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    out = {}
    for i in range(n):
        gt = torch.rand(1, 3, 16, 16, generator=g)
        out[f"img{i:02d}"] = ((gt * 0.6 + 0.05 * torch.rand(gt.shape, generator=g)).clamp(0, 1), gt)
    return out


def _records(images) -> dict:
    evaluator = EnhancementEvaluator()
    records = {}
    for name, (out, gt) in images.items():
        records.update(evaluator.records(out, gt, [name]))
    return records


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for n in (5, 1):  # odd count; fewer images than processes
            images = _images(n)
            names = sorted(images)
            padded = names + names[: (-len(names)) % world]  # DistributedSampler's padding repeats
            local = _records({k: images[k] for k in padded[rank::world]})
            with open(f"{out}.{n}.{rank}.json", "w") as f:
                json.dump(enhancement_report(gather_cases(local)).to_json(), f)
    finally:
        dist.destroy_process_group()


def test_records_do_not_depend_on_the_batch_an_image_is_in():
    images = _images(3)
    batch_out = torch.cat([o for o, _ in images.values()])
    batch_gt = torch.cat([t for _, t in images.values()])
    together = EnhancementEvaluator().records(batch_out, batch_gt, list(images))
    assert together == _records(images)  # exactly: what makes gathered per-image records exact on N processes


@pytest.mark.slow  # two spawned processes: ~20 s of start-up on a loaded 2-core machine
def test_two_processes_give_the_numbers_of_one(tmp_path):
    out = str(tmp_path / "report")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    for n in (5, 1):
        one = enhancement_report(gather_cases(_records(_images(n)))).to_json()
        for rank in (0, 1):
            two = json.loads((tmp_path / f"report.{n}.{rank}.json").read_text())
            assert two["metrics"] == one["metrics"] and two["cases"] == one["cases"]


# ----------------------------------------------------------------------------- evaluation padding


def test_release_padding_is_20_px_bottom_and_left_reflected_like_numpy():
    x = torch.arange(2 * 3 * 400 * 600, dtype=torch.float32).reshape(2, 3, 400, 600)
    padded = GLARE_RELEASE_PADDING.apply(x)
    assert padded.shape == (2, 3, 420, 620)
    ref = np.pad(x[0].permute(1, 2, 0).numpy(), [(0, 20), (20, 0), (0, 0)], "reflect")  # the release's impad
    assert np.array_equal(padded[0].permute(1, 2, 0).numpy(), ref)
    assert torch.equal(GLARE_RELEASE_PADDING.crop(padded), x)  # out[:, :, :h, 20:]
    assert torch.equal(padded[..., :400, 20:], x)


def test_padding_to_a_multiple_and_run_padded_crops_back():
    assert padding_to_multiple(37, 50, 4) == Padding(bottom=3, right=2)
    assert padding_to_multiple(37, 50, 4, "bottom_left") == Padding(bottom=3, left=2)
    assert padding_to_multiple(37, 50, 8, "centre") == Padding(top=1, bottom=2, left=3, right=3)
    assert padding_to_multiple(40, 48, 4) == Padding()
    x = torch.rand(1, 3, 37, 50)
    seen = []

    def net(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return t * 2

    assert torch.equal(run_padded(net, x, 4), x * 2) and seen == [(40, 52)]
    assert torch.equal(run_padded(net, x, Padding(top=5, left=7)), x * 2)
    with pytest.raises(ValueError, match="cropping back needs equal sizes"):
        run_padded(lambda t: t[..., :-1, :], x, 4)
    with pytest.raises(ValueError, match="smaller than the image side"):
        Padding(bottom=40).apply(x)
    with pytest.raises(ValueError, match=">= 0"):
        Padding(left=-1)
