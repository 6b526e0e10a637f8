"""GLARE Stage III loss (L1 + VGG16 perceptual + MS-SSIM, as released) and the Stage-I VQGAN losses."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.enhancement_losses import (
    MS_SSIM_WEIGHTS,
    GLAREStage3Loss,
    VGG16Perceptual,
    release_ms_ssim,
    vgg16_features,
)
from lightning_modules.vqgan_losses import (
    NLayerDiscriminator,
    VQGANLoss,
    adaptive_weight,
    adopt_weight,
    hinge_d_loss,
)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-layout VGG16 state dict (random weights; the features the loss reads, plus a head key)."""
    torch.manual_seed(0)
    features = vgg16_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(4096)  # a full torchvision file has these; they are ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path, features


def _const(value: float, shape=(2, 3, 32, 32), dtype=torch.float64) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


# ----------------------------------------------------------------------------- MS-SSIM


def test_ms_ssim_of_constant_images_is_closed_form_and_the_release_product_differs():
    a, b = 0.5, 0.25
    sim = (2 * a * b + 0.01**2) / (a * a + b * b + 0.01**2)  # no variance: contrast-structure = C2 / C2 = 1
    sim_n = (sim + 1) / 2
    w5 = MS_SSIM_WEIGHTS[-1]
    release = release_ms_ssim(_const(a), _const(b)).item()
    standard = release_ms_ssim(_const(a), _const(b), product="standard").item()
    # tolerance: the package's Gaussian window is float32 (sums to 1 within ~1e-7), as here
    assert release == pytest.approx(sim_n ** (4 * w5), rel=1e-5)  # prod over 4 scales of cs^w · ssim_5^w5
    assert standard == pytest.approx(sim_n**w5, rel=1e-5)
    assert release != pytest.approx(standard, rel=1e-3)
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert release_ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_pools_the_batch_before_the_powers_and_takes_the_range_from_the_first_image():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    y[1] = x[1]
    whole = release_ms_ssim(x, y).item()
    per_image = [release_ms_ssim(x[i:i + 1], y[i:i + 1]).item() for i in range(2)]
    assert whole != pytest.approx(sum(per_image) / 2, abs=1e-4)  # batch means, not a mean of scores
    scaled = release_ms_ssim(x * 255, y * 255).item()  # max > 128: data range 255, same score
    assert scaled == pytest.approx(whole, rel=1e-4)
    tiny = release_ms_ssim(x[..., :20, :20], y[..., :20, :20])  # windows shrink to the coarse scales' size
    assert torch.isfinite(tiny)


# ----------------------------------------------------------------------------- VGG perceptual


def test_perceptual_term_is_skipped_with_one_warning_without_a_file(tmp_path):
    with pytest.warns(UserWarning, match="perceptual loss term skipped.*no VGG16 weights file"):
        loss = GLAREStage3Loss()
    with pytest.warns(UserWarning, match="not found"):
        VGG16Perceptual(str(tmp_path / "missing.pth"))
    out, gt = _const(0.5, dtype=torch.float32), _const(0.25, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning per call
        terms = loss(out, gt)
    assert terms["perceptual"].item() == 0.0 and not loss.perceptual.available
    sim_n = ((2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4) + 1) / 2
    want_ms = 0.2 * (1 - sim_n ** (4 * MS_SSIM_WEIGHTS[-1]))
    assert terms["l1"].item() == pytest.approx(0.25) and terms["ms_ssim"].item() == pytest.approx(want_ms, abs=2e-6)
    assert terms["loss"].item() == pytest.approx(0.25 + want_ms, abs=2e-6)


def test_perceptual_is_the_mean_of_three_vgg16_feature_mses_without_imagenet_norm(vgg_file):
    path, features = vgg_file
    perceptual = VGG16Perceptual(str(path))
    assert perceptual.available and not any(p.requires_grad for p in perceptual.parameters())
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(1, 3, 24, 24, generator=g), torch.rand(1, 3, 24, 24, generator=g)
    with torch.no_grad():
        want = sum(F.mse_loss(features[:i + 1](x), features[:i + 1](y)) for i in (3, 8, 15)) / 3
    assert torch.allclose(perceptual(x, y), want, rtol=1e-5)
    assert perceptual(x, x).item() == 0.0
    normed = VGG16Perceptual(str(path), imagenet_norm=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    assert torch.allclose(normed(x, y), perceptual((x - mean) / std, (y - mean) / std), rtol=1e-5)


def test_stage3_loss_gradients_reach_the_output_and_nans_are_masked(vgg_file):
    loss = GLAREStage3Loss(str(vgg_file[0]))
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    out = (gt * 0.7 + 0.2 * torch.rand(gt.shape, generator=g)).requires_grad_(True)
    terms = loss(out, gt)
    assert set(terms) == {"loss", "l1", "perceptual", "ms_ssim"} and terms["perceptual"] > 0
    terms["loss"].backward()
    assert out.grad is not None and out.grad.abs().sum() > 0 and torch.isfinite(out.grad).all()
    bad = out.detach().clone()
    bad[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        masked = loss(bad, gt)
    assert torch.isfinite(masked["loss"])
    fixed = bad.clone()
    fixed[0, 0, 0, 0] = 0.0
    l1 = ((fixed.clamp(0, 1) - gt).abs().sum() - (0.0 - gt[0, 0, 0, 0]).abs()) / gt.numel()
    assert masked["l1"].item() == pytest.approx(l1.item(), rel=1e-5)


def test_stage3_loss_is_float32_under_bf16_autocast():
    """bf16 MS-SSIM variances cancel to noise (its powers went to -inf); the loss runs in float32 as released."""
    loss = GLAREStage3Loss()
    g = torch.Generator().manual_seed(4)
    gt = torch.rand(2, 3, 48, 64, generator=g)
    # a nearly flat output, as an untrained decoder gives: bf16 MS-SSIM read 0.90 here instead of 0.59
    out = (0.45 + 0.01 * torch.rand(gt.shape, generator=g)).requires_grad_(True)
    reference = loss(out, gt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(out.bfloat16(), gt)
    assert all(v.dtype == torch.float32 for v in mixed.values())
    assert mixed["ms_ssim"].item() == pytest.approx(reference["ms_ssim"].item(), abs=1e-4)
    mixed["loss"].backward()
    assert torch.isfinite(out.grad).all()


# ----------------------------------------------------------------------------- Stage-I VQGAN losses


def test_patchgan_discriminator_shape_count_and_init():
    disc = NLayerDiscriminator()
    # conv 3→64 (+bias), 64→128, 128→256, 256→512 (no bias, BatchNorm each), 512→1 (+bias); 4x4 kernels
    want = (3 * 64 * 16 + 64) + 64 * 128 * 16 + 2 * 128 + 128 * 256 * 16 + 2 * 256 + 256 * 512 * 16 + 2 * 512 + (
        512 * 16 + 1)
    assert sum(p.numel() for p in disc.parameters()) == want == 2_765_633
    assert disc(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64 / 8 − 2
    assert abs(disc.main[0].weight.std().item() - 0.02) < 0.005


def test_hinge_and_start_step_on_hand_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * ((0 + 0.5) / 2 + (0 + 1) / 2))
    assert adopt_weight(1.0, 9, 10) == 0.0 and adopt_weight(1.0, 10, 10) == 1.0


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec, g = (3 * w).sum(), (w**2).sum()  # gradients (3, 3) and (2, 4)
    want = math.sqrt(18) / (math.sqrt(20) + 1e-4) * 0.5
    assert adaptive_weight(rec, g, w, 0.5).item() == pytest.approx(want, rel=1e-6)


def test_vqgan_generator_and_discriminator_losses_before_and_after_the_start():
    with pytest.warns(UserWarning):
        loss = VQGANLoss(disc_start=5, disc_ndf=8, disc_layers=2)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 32, 32, generator=g)
    last = torch.nn.Parameter(torch.randn(3, 3, 3, 3, generator=g) * 0.1)
    recon = torch.sigmoid(F.conv2d(x, last, padding=1))
    codebook = torch.tensor(0.3)
    early = loss.generator(x, recon, codebook, global_step=4, last_layer=last)
    assert early["g"].item() == 0.0 and early["disc_factor"].item() == 0.0
    assert early["loss"].item() == pytest.approx((early["rec"] + 0.3).item())
    assert early["pixel"].item() == pytest.approx((x - recon).abs().mean().item())
    assert loss.discriminator_loss(x, recon, global_step=4)["loss"].item() == 0.0
    late = loss.generator(x, recon, codebook, global_step=5, last_layer=last)
    assert late["disc_factor"].item() == 1.0 and late["d_weight"].item() > 0
    assert late["loss"].item() == pytest.approx((late["rec"] + 0.3 + late["d_weight"] * late["g"]).item(), rel=1e-6)
    late["loss"].backward()
    assert last.grad is not None and last.grad.abs().sum() > 0
    d = loss.discriminator_loss(x, recon, global_step=5)
    d["loss"].backward()
    assert all(p.grad is not None for p in loss.discriminator.parameters())


def test_vqgan_perceptual_terms_read_the_user_vgg_file(vgg_file):
    loss = VQGANLoss(vgg_weights=str(vgg_file[0]), disc_ndf=8, disc_layers=2)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    y = (x * 0.8).requires_grad_(True)
    terms = loss.reconstruction(x, y)
    assert terms["perceptual"].item() == pytest.approx(0.01 * loss.perceptual(y, x).item()) and terms["perceptual"] > 0
    terms["rec"].backward()
    assert y.grad.abs().sum() > 0


@pytest.mark.slow  # writes and reads a whole random VGG16 feature stack (59 MB)
def test_lpips_vgg_option_maps_the_vgg16_backbone_into_torchmetrics_lpips(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(6)
    features = make_layers(cfgs["D"], batch_norm=False)  # the whole VGG16 feature stack, random
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    loss = VQGANLoss(perceptual="lpips_vgg", vgg_weights=str(tmp_path / "vgg16.pth"), disc_ndf=8, disc_layers=2)
    assert torch.equal(getattr(loss.perceptual.net.net.slice5, "28").weight, features[28].weight)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    assert loss.perceptual(x, x).item() == pytest.approx(0.0, abs=1e-7) and loss.perceptual(x, x * 0.5) > 0
    with pytest.warns(UserWarning, match="LPIPS-VGG perceptual loss term skipped"):
        VQGANLoss(perceptual="lpips_vgg", disc_ndf=8, disc_layers=2)
