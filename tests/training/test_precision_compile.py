"""bf16-mixed and the compile switch run through every paper recipe, on the CPU and (GPU tier) on CUDA;
bf16 test metrics stay near fp32.

Each recipe runs with its synthetic-data and smoke layers (the CI sizes). The bf16 and fp32 runs test
the same untrained weights (the same seed), so the metrics differ only by bf16's rounding.
"""
from __future__ import annotations

import pytest
import torch

from tests.training.helpers import CONFIGS, make_cli

#: How far a bf16 test metric may lie from fp32's, by metric name (its last part): DSC / IoU in
#: points, HD95 in voxels, PSNR in dB, SSIM, and top-k accuracy in points. bf16 rounds activations
#: to 8 significant bits, which moves the argmax near class ties (segmentation, classification)
#: and the images by about 2^-9 (enhancement). The accuracy bound is one image of the smoke set's 10.
BF16_TOLERANCE = {"dice": 2.0, "hd95": 2.0, "iou": 2.0, "psnr": 0.5, "ssim": 0.02, "top1": 10.0, "top5": 10.0}

_SMALL_IMAGENET = {"data.init_args.synthetic": {"num_classes": 10, "train_per_class": 4, "val_per_class": 1,
                                                "size": None, "seed": 0}}
_SHORT_CHAIN = {"model.init_args.stage1_steps": 2, "model.init_args.stage2_steps": 2,
                "model.init_args.stage3_steps": 2, "trainer.max_steps": 4, "trainer.val_check_interval": 4}
_TWO_STEPS = {"trainer.limit_train_batches": 2}
#: recipe → (config files: recipe, synthetic data, smoke; the overrides that keep it to seconds)
RECIPES = {
    "cswin_unet/synapse": (["cswin_unet/synapse", "_base_/synthetic_synapse", "cswin_unet/smoke"],
                           {**_TWO_STEPS, "data.init_args.val_volumes": 0}),
    "cswin_unet/slab": (["cswin_unet/synapse", "_base_/synthetic_synapse", "cswin_unet/smoke", "cswin_unet/slab"],
                        {**_TWO_STEPS, "data.init_args.val_volumes": 0}),
    "convformer/acdc": (["convformer/acdc", "_base_/synthetic_acdc", "convformer/smoke"], _TWO_STEPS),
    "convformer/isic2018": (["convformer/isic2018", "_base_/synthetic_isic", "convformer/smoke"], _TWO_STEPS),
    "slab/deit_t": (["slab/deit_t", "_base_/synthetic_imagenet", "slab/smoke"], {**_SMALL_IMAGENET, **_TWO_STEPS}),
    "glare/stage1_lol": (["glare/stage1_lol", "_base_/synthetic_lol", "glare/smoke"], {"trainer.max_steps": 2}),
    "glare/stage2_lol": (["glare/stage2_lol", "_base_/synthetic_lol", "glare/smoke"], {"trainer.max_steps": 2}),
    "glare/stage3_lol": (["glare/stage3_lol", "_base_/synthetic_lol", "glare/smoke"], {"trainer.max_steps": 2}),
    "glare/chain_lol": (["glare/chain_lol", "_base_/synthetic_lol", "glare/smoke"], _SHORT_CHAIN),
}
pytestmark = pytest.mark.filterwarnings("ignore:Synthetic data", "ignore:VGG16 perceptual loss term skipped",
                                        "ignore:The number of training batches", "ignore:.*without AVX-512 BF16")


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _cli(tmp_path, recipe: str, **overrides):
    names, fixed = RECIPES[recipe]
    return make_cli(tmp_path, [CONFIGS / f"{name}.yaml" for name in names], **{**fixed, **overrides})


def _tolerance(metric: str) -> float | None:
    """The bound of a data-set metric (``test/mean_dice``, ``test/psnr_gt_mean``, ``test/glare/ssim``);
    ``None`` for per-class entries (``test/dice/aorta``) and metrics without a stated bound."""
    words = metric.rsplit("/", 1)[-1].split("_")
    return next((BF16_TOLERANCE[w] for w in words if w in BF16_TOLERANCE), None)


def test_every_recipe_is_covered():
    from tests.training.test_configs import PAPER_RECIPES

    assert {f"{p.parent.name}/{p.stem}" for p in PAPER_RECIPES} <= set(RECIPES)


#: The CPU in the default tier; CUDA in the GPU tier (``pytest -m gpu``), skipped without a device.
ACCELERATORS = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("accelerator", ACCELERATORS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_bf16_mixed_tests_within_tolerance_of_fp32_and_fits(recipe, accelerator, tmp_path, cache):
    device = {"trainer.accelerator": accelerator, "trainer.devices": 1}
    fp32 = _cli(tmp_path / "fp32", recipe, **device)
    bf16 = _cli(tmp_path / "bf16", recipe, **device, **{"trainer.precision": "bf16-mixed"})
    weights = fp32.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in bf16.model.state_dict().items())  # the same start
    for cli in (fp32, bf16):
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    a, b = fp32.model.test_report.metrics, bf16.model.test_report.metrics
    assert a.keys() == b.keys()
    compared = {key: value for key, value in a.items() if _tolerance(key) is not None}
    assert compared, f"{recipe}: no metric with a stated bf16 tolerance among {sorted(a)}"
    assert any(compared.values()), f"{recipe}: every compared fp32 metric is 0, so nothing is compared"
    for key, value in compared.items():
        assert abs(value - b[key]) <= _tolerance(key), (key, value, b[key])
    # and training under autocast runs and keeps the weights finite
    bf16.trainer.fit(bf16.model, datamodule=bf16.datamodule)
    assert bf16.trainer.global_step > 0
    assert torch.isfinite(torch.stack([p.detach().float().sum() for p in bf16.model.parameters()])).all()


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ACCELERATORS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_compile_switch_fits_and_tests(recipe, accelerator, tmp_path, cache):
    cli = _cli(tmp_path, recipe, **{"model.init_args.compile": True, "trainer.accelerator": accelerator,
                                    "trainer.devices": 1})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert cli.model._compiled and cli.model.test_report.metrics
    assert not any("_orig_mod" in k for k in cli.model.state_dict())  # checkpoints keep their keys
