"""GLARE stage modules on synthetic LOL pairs, tiny width: fit, freezing, stage weights, Stage-I cache, reports."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from datamodules.lol import LowLightPairsDataModule
from datamodules.synthetic_lol import SyntheticLowLight
from lightning_modules.enhancement import padded_call
from lightning_modules.enhancement_losses import GLAREStage3Loss
from lightning_modules.glare_chain import GlareChainModule, phase_factor
from lightning_modules.glare_stage1 import GlareStage1Module, stage1_losses
from lightning_modules.glare_stages import GlareStage2Module, GlareStage3Module, finite_latent, stage2_loss
from lightning_modules.vqgan_losses import VQGANLoss
from models.glare import glare_test
from models.glare_vqgan import glare_vqgan_test

pytestmark = pytest.mark.filterwarnings("ignore:VGG16 perceptual loss term skipped", "ignore:.*LeafSpec.*",
                                        "ignore:The number of training batches", "ignore:Synthetic data")
KEYS = ("test/psnr", "test/ssim", "test/psnr_gt_mean", "test/ssim_gt_mean")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _data(**kwargs) -> LowLightPairsDataModule:
    options = dict(crop_size=32, batch_size=2, seed=3, data_check="off", train_augment="crop_flip",
                   synthetic=SyntheticLowLight(num_train=4, num_test=2))
    return LowLightPairsDataModule(**{**options, **kwargs})


def _trainer(root, steps: int, **kwargs) -> L.Trainer:
    options = dict(max_steps=steps, accelerator="cpu", devices=1, logger=L.pytorch.loggers.CSVLogger(root, name=""),
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   check_val_every_n_epoch=None, val_check_interval=steps, default_root_dir=root,
                   log_every_n_steps=1)
    from lightning_modules.enhancement import EnhancementTriplets

    return L.Trainer(**{**options, "callbacks": [EnhancementTriplets(num_samples=2)], **kwargs})


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _report_ok(module, trainer, outputs=()) -> None:
    metrics = module.test_report.metrics
    for key in KEYS + tuple(f"test/{o}/psnr_gt_mean" for o in outputs):
        assert key in metrics and metrics[key] == metrics[key], key  # present, not NaN
    assert len(module.test_report.cases) == 2  # every test image once
    saved = json.loads(module.test_metrics_path.read_text())
    assert saved["metrics"] == pytest.approx(metrics)
    assert Path(trainer.log_dir, "triplets", "test.png").is_file()


def test_stage1_fits_and_reports_reconstruction(tmp_path, cache):
    torch.manual_seed(0)
    module = GlareStage1Module(glare_vqgan_test(), loss=VQGANLoss(disc_start=1))
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, datamodule=_data())
    trainer.test(module, datamodule=_data(), verbose=False)
    _report_ok(module, trainer)
    assert module.test_report.meta["recipe"].startswith("project-defined")
    assert list((tmp_path / "version_0" / "triplets").glob("val_step*.png"))


def test_stage1_losses_route_gradients(cache):
    """The generator loss reaches the autoencoder only, the hinge loss the discriminator only."""
    torch.manual_seed(0)
    vqgan, loss = glare_vqgan_test(), VQGANLoss(disc_start=0, adaptive=False)
    images = torch.rand(2, 3, 32, 32)
    losses = stage1_losses(vqgan, loss, images, step=5)
    torch.autograd.backward(losses["d/loss"], inputs=list(loss.discriminator.parameters()), retain_graph=True)
    d_only = [p.grad.clone() for p in loss.discriminator.parameters()]
    loss.discriminator.zero_grad()
    losses["loss"].backward()
    for p, g in zip(loss.discriminator.parameters(), d_only, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert all(p.requires_grad for p in loss.discriminator.parameters())
    assert vqgan.decoder.conv_out.weight.grad is not None and losses["g/g"].item() != 0


def test_stage2_trains_ec_and_flow_only(tmp_path, cache):
    torch.manual_seed(0)
    net = glare_test(aft=False)
    module = GlareStage2Module(net, objective="nll")
    vqgan_before, stage2_before = _state(net.vqgan), _state(net.stage2)
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, datamodule=_data())
    assert _same(vqgan_before, _state(net.vqgan))  # frozen: unchanged
    assert not _same(stage2_before, _state(net.stage2))
    assert all(p.grad is None for p in net.vqgan.parameters())  # frozen: no gradient
    assert module.start_weights and "random" in module.start_weights[0]  # synthetic data without Stage I: allowed
    trainer.test(module, datamodule=_data(), verbose=False)
    _report_ok(module, trainer)
    assert module.test_report.meta["objective"] == "nll" and "test set" in module.test_report.meta["selection"]


@pytest.mark.parametrize("latent_model", ["flow", "none"])
def test_stage2_l1_objective_reaches_its_parameters_only(latent_model):
    """Table 5 rows (1) and (3): the L1 latent loss trains E_c (+ flow); the VQGAN and, without I-LNF, the flow
    and the conditioning head get no gradient."""
    torch.manual_seed(0)
    net = glare_test(aft=False, latent_model=latent_model)
    module = GlareStage2Module(net, objective="l1")
    stage2_loss(module.net, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), "l1").backward()
    trained = {id(p) for _, p in net.trainable_parameters(2)}
    for name, p in net.named_parameters():
        assert (p.grad is not None) == (id(p) in trained and not name.endswith("unused")), name
    if latent_model == "none":
        assert all(p.grad is None for p in net.stage2.flow.parameters())
        with pytest.raises(ValueError, match="needs the flow"):
            GlareStage2Module(net, objective="nll")


def test_stage3_starts_from_stage2_and_trains_the_decoder_only(tmp_path, cache):
    torch.manual_seed(0)
    source = glare_test(aft=False)  # a "Stage-II checkpoint": what GlareStage2Module saves
    ckpt = tmp_path / "stage2.ckpt"
    torch.save({"pytorch-lightning_version": L.__version__,
                "state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    net = glare_test()
    module = GlareStage3Module(net, stage2_checkpoint=str(ckpt), loss=GLAREStage3Loss())
    decoder_before = _state(net.deformable_decoder)
    trainer = _trainer(tmp_path / "s3", 2)
    trainer.fit(module, datamodule=_data())
    assert _same(_state(source.stage2), _state(net.stage2))  # loaded, then frozen
    assert _same(_state(source.vqgan), _state(net.vqgan))  # our Stage-II checkpoint carries its VQGAN
    assert not _same(decoder_before, _state(net.deformable_decoder))
    assert all(p.grad is None for p in [*net.stage2.parameters(), *net.vqgan.parameters()])
    trainer.test(module, datamodule=_data(), verbose=False)
    _report_ok(module, trainer, outputs=("simglare",))


def test_missing_previous_stage_is_an_error_on_real_data(tmp_path):
    module = GlareStage2Module(glare_test(aft=False))
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(is_synthetic=False))
    with pytest.raises(ValueError, match="stage1_checkpoint"):
        module.missing_start("stage1_checkpoint", "the Stage-I VQGAN")
    from lightning_modules.glare_weights import load_stage1_weights

    with pytest.raises(FileNotFoundError, match="stage1_checkpoint"):
        load_stage1_weights(module.net, tmp_path / "missing.ckpt")


def _chain(**kwargs) -> GlareChainModule:
    torch.manual_seed(0)
    options = dict(stage1_steps=2, stage2_steps=1, stage3_steps=1, report_first="simglare")
    return GlareChainModule(glare_test(), **{**options, **kwargs})


def _stub_trainer() -> SimpleNamespace:
    return SimpleNamespace(datamodule=_data(), world_size=1, accelerator="cpu", precision="32-true")


def test_chain_trains_stage1_once_and_reuses_the_cache(tmp_path, cache):
    first = _chain()
    first._trainer = _stub_trainer()
    torch.manual_seed(5)
    first.setup("fit")  # cache miss: Stage I is trained (in a forked RNG state)
    after_miss = torch.rand(3)
    assert first.stage1_trained and len(list((cache / "glare_stages").glob("stage1-*.pt"))) == 1

    second = _chain(objective="l1")  # another Stage II, the same Stage I
    trainer = _trainer(tmp_path, 2)
    trainer.fit(second, datamodule=_data())  # cache hit: nothing retrained
    assert not second.stage1_trained and "cache" in second.stage1_source
    trainer.test(second, datamodule=_data(), verbose=False)
    _report_ok(second, trainer, outputs=("glare",))
    assert second.test_report.meta["reported_first"] == "simglare"

    third = _chain()
    third._trainer = _stub_trainer()
    torch.manual_seed(5)
    third.setup("fit")
    assert not third.stage1_trained and _same(_state(first.net.vqgan), _state(third.net.vqgan))
    torch.testing.assert_close(torch.rand(3), after_miss)  # the run's random stream: as after the miss


def test_mfd_can_start_as_a_copy_of_the_stage1_decoder(cache):
    chain = _chain(mfd_init="vqgan_decoder")
    chain._trainer = _stub_trainer()
    before = _state(chain.net.deformable_decoder)
    chain.setup("fit")  # Stage I trained (or cached), then the copy
    mfd, nld = _state(chain.net.deformable_decoder), _state(chain.net.vqgan.decoder)
    assert _same({k: mfd[k] for k in nld if k != "conv_out.weight" and k != "conv_out.bias"},
                 {k: v for k, v in nld.items() if not k.startswith("conv_out.")})
    torch.testing.assert_close(mfd["residual_conv.weight"], nld["conv_out.weight"], rtol=0, atol=0)
    fusion = [k for k in mfd if k.startswith(("warp.", "mix."))]
    assert fusion and _same({k: mfd[k] for k in fusion}, {k: before[k] for k in fusion})  # the MFD's own layers
    assert _same(_state(_chain().net.deformable_decoder), before)  # the default: the release's initialisation


@pytest.mark.parametrize("kwargs,match", [(dict(mfd_init="copy"), "mfd_init must be"),
                                          (dict(mfd_init="vqgan_decoder", aft=False), "aft=True")])
def test_mfd_init_is_checked_when_the_module_is_built(kwargs, match):
    net = glare_test(aft=kwargs.pop("aft", True))
    with pytest.raises(ValueError, match=match):
        GlareChainModule(net, stage3_steps=0, report_first="simglare", **kwargs)


def test_mfd_copy_refuses_a_decoder_that_does_not_mirror_it():
    with pytest.raises(ValueError, match="does not mirror"):
        glare_test().deformable_decoder.init_from_decoder(glare_test(ch=64, aft=False).vqgan.decoder)


def test_phase_factor_is_each_stage_multistep_inside_it_and_zero_outside():
    factors = [phase_factor(k, 10, 20, (0.5, 0.75, 0.9, 0.95), 0.5) for k in range(0, 32)]
    assert factors[:10] == [0.0] * 10 and factors[30:] == [0.0, 0.0]
    assert factors[10] == 1.0 and factors[19] == 1.0 and factors[20] == 0.5 and factors[25] == 0.25
    assert factors[28] == 0.125 and factors[29] == 0.0625


def test_padded_call_pads_as_released_and_crops_back():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return {"a": x * 2, "b": x}

    low = torch.rand(1, 3, 30, 50)
    out = padded_call(fn, low, "release")
    assert seen == [(52, 72)]  # 20 px bottom and left, then to a multiple of 4
    torch.testing.assert_close(out["a"], 2 * low)
    assert padded_call(fn, low, "multiple")["b"].shape == low.shape and seen[-1] == (32, 52)


def test_finite_latent_guards_the_deformable_decoder():
    latent = torch.tensor([[[[1.0, float("nan")], [float("inf"), -2e5]]]])
    assert torch.equal(finite_latent(latent), torch.tensor([[[[1.0, 0.0], [0.0, -1e4]]]]))
    ok = torch.randn(1, 3, 2, 2)
    assert finite_latent(ok) is ok


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(tmp_path, cache):
    """`reproduce/train.py test` of a Stage-II checkpoint on 2 gloo processes, 3 test images (one padding
    repeat): the report equals that of 1 process exactly."""
    import os
    import subprocess
    import sys

    from ablations.framework.provenance import REPO_ROOT
    from tests.training.helpers import CONFIGS, make_cli

    files = [CONFIGS / "glare" / "stage2_lol.yaml", CONFIGS / "_base_" / "synthetic_lol.yaml",
             CONFIGS / "glare" / "smoke.yaml"]
    cli = make_cli(tmp_path / "fit", files, **{"trainer.max_steps": 1, "data.init_args.synthetic.num_test": 3})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (ckpt,) = (tmp_path / "fit").rglob("last.ckpt")

    def run(name: str, devices: int) -> dict:
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": str(tmp_path), "name": "", "version": name}}
        command = [sys.executable, "reproduce/train.py", "test", *[a for f in files for a in ("--config", str(f))],
                   "--data.init_args.synthetic.num_test", "3", "--trainer.logger", json.dumps(logger),
                   "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false", "--trainer.strategy", "ddp",
                   "--trainer.devices", str(devices), "--trainer.accelerator", "cpu", "--ckpt_path", str(ckpt)]
        env = {**os.environ, "REPRO_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads((tmp_path / name / "test_metrics.json").read_text())

    one, two = run("one", 1), run("two", 2)
    assert len(one["cases"]) == 3 and one["metrics"]["test/psnr"] > 0
    assert two["metrics"] == one["metrics"] and two["cases"] == one["cases"]
