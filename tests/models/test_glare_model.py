"""The whole GLARE network (models/glare.py): counts, composition, inference, freezing, ablation forms, conversion."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from models import create_model, model_info
from models.glare import GLARE, convert_official_state_dict, official_key, official_state_dicts
from models.official import fixtures_root

GLARE_FIXTURES = fixtures_root() / "glare"
STAGE2, DECODER, VQGAN = 27_680_219, 44_035_040, 62_907_614
VGG_SLICE = 2_325_568  # VGG19 conv1_1 … conv3_4, frozen in the release's VQGAN
COND_CONV = 64 * 3 * 9 + 64  # E_c's cond_feat head


pytestmark = pytest.mark.usefixtures("one_thread")


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _on_meta(**kwargs) -> GLARE:
    with torch.device("meta"):  # full size without allocating or initialising weights
        return GLARE(**kwargs)


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _randomize(model: GLARE, std: float = 0.05) -> GLARE:
    """Non-trivial flow and warps (zero-initialised in a fresh model), so swapped weights would show."""
    for name, p in model.named_parameters():
        if name.endswith("invconv.weight"):
            p.copy_(torch.linalg.qr(torch.randn(p.shape))[0] + 0.05 * torch.randn_like(p))
        elif name.startswith("stage2.flow.") or "conv_offset" in name or name.endswith("mix.0.w"):
            p.copy_(std * torch.randn_like(p))
    return model


def tiny(**kwargs) -> GLARE:
    torch.manual_seed(0)
    return _randomize(create_model("glare_test", **kwargs))


LOW = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))


# --- counts and names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,total", [
    ({}, STAGE2 + DECODER + VQGAN),                              # 134,622,873: the registered ``glare``
    (dict(unused_layers=False), 125_856_726),                    # every part's dead weights dropped
    (dict(include_vqgan=False), 71_715_259),                     # the release's netG (glare/stage3 manifest)
    (dict(aft=False), STAGE2 + VQGAN),                           # SimGLARE
])
def test_exact_parameter_counts(kwargs, total):
    model = _on_meta(**kwargs)
    assert _count(model.parameters()) == total
    if kwargs.get("unused_layers") is False:
        assert _count(model.stage2.parameters()) == STAGE2 - 1_106_304
        assert _count(model.deformable_decoder.parameters()) == 38_701_789
        assert _count(model.vqgan.parameters()) == 60_581_022


def test_registry_entry():
    info = model_info("glare")
    assert info.input_size == (3, 420, 620) and info.paper == "glare" and info.task == "enhancement"  # LOL, padded
    assert all(model_info(n).input_size == (3, 420, 620) for n in ("glare_vqgan", "glare_stage2"))
    assert model_info("glare_decoder").input_size == (3, 105, 155)  # its latent
    assert model_info("glare_test").input_size[1] % 4 == 0 == model_info("glare_test").input_size[2] % 4


def test_the_released_model_runs_at_the_lol_size_on_the_meta_device():
    model = _on_meta().eval()  # shapes only (no weights, no arithmetic): the padded LOL pipeline fits together
    with torch.device("meta"), torch.no_grad():
        out = model.stage3_outputs(torch.empty(1, *model_info("glare").input_size))
    assert out.image.shape == (1, 3, 420, 620) and out.latent.shape == (1, 3, 105, 155)


def test_names_and_shapes_equal_the_release():
    manifests = {c: GLARE_FIXTURES / c / "manifest.json" for c in ("stage3", "vqgan")}
    if not all(p.is_file() for p in manifests.values()):
        pytest.skip(f"official manifests not found under {GLARE_FIXTURES}")
    stage3, vqgan = (json.loads(p.read_text()) for p in manifests.values())
    net_g, vq = official_state_dicts(_on_meta())
    assert {k: list(v.shape) for k, v in net_g.items()} == {n: s for n, s in stage3["params"] + stage3["buffers"]}
    assert {k: list(v.shape) for k, v in vq.items()} == {n: s for n, s in vqgan["params"] + vqgan["buffers"]}
    # the release's Stage III trains the MFD only (fix_modules RRDB, flowUpsamplerNet; VQGAN frozen)
    assert _count(p for p in _on_meta().parameters() if p.requires_grad) == DECODER == 44_035_040
    assert "44035040 trainable" in stage3["notes"]


def test_tiny_model_is_the_composition_of_the_parts_test_models():
    model = create_model("glare_test")
    parts = {"stage2": create_model("glare_stage2_test", ch_mult=(1, 2, 4)),
             "deformable_decoder": create_model("glare_decoder_test"), "vqgan": create_model("glare_vqgan_test")}
    for name, part in parts.items():
        ours = getattr(model, name).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in part.state_dict().items()}, name


# --- inference ------------------------------------------------------------------------------------------------

def test_forward_is_the_released_pipeline_of_the_parts():
    model = tiny().eval()
    with torch.no_grad():
        out = model.stage3_outputs(LOW)
        cond = model.stage2.condition(LOW)
        latent = model.stage2.enhance_latent(LOW)  # heat 0: z = μ, inverse flow
        quant, _, _ = model.vqgan.quantize(latent)  # codebook retrieval
        nl_image, feats = model.vqgan.decoder(model.vqgan.post_quant_conv(quant))
        image = model.deformable_decoder(latent, feats, cond.mid_feats)  # the MFD decodes the un-quantised ŷ
        again = model(LOW)
    torch.testing.assert_close(out.latent, latent, rtol=0, atol=0)
    torch.testing.assert_close(out.nl_image, nl_image, rtol=0, atol=0)
    torch.testing.assert_close(out.image, image, rtol=0, atol=0)
    torch.testing.assert_close(again, out.image, rtol=0, atol=0)  # heat 0 is deterministic
    assert out.image.shape == LOW.shape and out.latent.shape == (2, 3, 8, 12) and out.codebook_loss.ndim == 0
    assert not torch.equal(out.image, out.nl_image)


def test_heat_sampling_is_seeded_and_not_the_mean():
    model = tiny().eval()
    with torch.no_grad():
        mean = model.latent(LOW)
        a = model.latent(LOW, heat=0.5, generator=torch.Generator().manual_seed(3))
        b = model.latent(LOW, heat=0.5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, mean)


@pytest.mark.parametrize("shape", [(1, 3, 30, 48), (1, 3, 32, 46), (1, 1, 32, 48)])
def test_inputs_must_be_rgb_with_sides_divisible_by_4(shape):
    with pytest.raises(ValueError, match="divisible by 4|B, 3, H, W"):
        tiny()(torch.rand(shape))


def test_netg_form_cannot_run_without_its_vqgan():
    with pytest.raises(RuntimeError, match="no VQGAN"):
        create_model("glare_test", include_vqgan=False)(LOW)


def test_stage3_train_step_reaches_exactly_the_mfd():
    model = tiny().train()
    out = model.stage3_outputs(LOW)
    out.image.float().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == _trainable(model) == {n for n, _ in model.named_parameters() if n.startswith("deformable_")}
    assert all(torch.isfinite(p.grad).all() for p in model.deformable_decoder.parameters())


def test_bf16_autocast_on_the_cpu_runs_the_deformable_warp_in_float32():
    from models.layers.deformable import ModulatedDeformConv2d

    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 8, 3, padding=1, deformable_groups=4)
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.1)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = dcn(x)  # torchvision has no CPU autocast rule: bf16 offsets with float32 x used to fail
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, dcn(x).detach(), rtol=0.05, atol=0.05)  # only the offsets were bf16
    model = tiny().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = model(LOW)
    image.float().mean().backward()
    assert image.shape == LOW.shape and torch.isfinite(image.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.deformable_decoder.parameters())


# --- stage freezing -------------------------------------------------------------------------------------------

def test_freezing_per_stage_leaves_the_released_trainable_sets():
    model = _on_meta()
    assert _count(model.freeze_for_stage(3)) == DECODER
    assert _trainable(model) == {n for n, _ in model.named_parameters() if n.startswith("deformable_decoder.")}
    assert _count(model.freeze_for_stage(2)) == STAGE2  # E_c + flow (its dead head too, as released)
    assert _trainable(model) == {n for n, _ in model.named_parameters() if n.startswith("stage2.")}
    assert _count(model.freeze_for_stage(1)) == VQGAN - VGG_SLICE  # the VQGAN; its VGG slice stays frozen
    assert not any(p.requires_grad for p in model.vqgan.vgg_feat_extractor.parameters())
    assert _trainable(model) == {n for n, _ in model.trainable_parameters(1)}
    assert _count(p for p in _on_meta(aft=False).parameters() if p.requires_grad) == STAGE2  # SimGLARE: Stage II
    with pytest.raises(ValueError, match="stage must be"):
        model.freeze_for_stage(4)
    with pytest.raises(ValueError, match="aft=False"):
        _on_meta(aft=False).freeze_for_stage(3)


def test_trainable_parameters_changes_nothing():
    model = _on_meta()
    before = _trainable(model)
    assert {n for n, _ in model.trainable_parameters(2)} != before
    assert _trainable(model) == before


# --- ablation forms -------------------------------------------------------------------------------------------

def test_simglare_is_the_vqgan_decoding_of_the_stage2_latent():
    model = tiny(aft=False).eval()
    assert model.deformable_decoder is None
    with torch.no_grad():
        out = model.stage3_outputs(LOW)
        expected = model.vqgan.decode(model.stage2.enhance_latent(LOW))[0]
    torch.testing.assert_close(out.image, expected, rtol=0, atol=0)


def test_without_ilnf_the_conditional_mean_is_decoded_and_regressed():
    model = tiny(latent_model="none", aft=False)
    model.freeze_for_stage(2)
    assert _trainable(model) == {n for n, _ in model.named_parameters()
                                 if n.startswith(("stage2.cond_encoder.encoder.", "stage2.cond_encoder.color_conv."))}
    assert _count(model.stage2.parameters()) - _count(p for _, p in model.trainable_parameters(2)) == (
        _count(model.stage2.flow.parameters()) + _count(model.stage2.cond_encoder.cond_conv.parameters()))
    model.eval()
    with torch.no_grad():
        out = model.stage3_outputs(LOW)
        mean = model.stage2.condition(LOW).color_map
    torch.testing.assert_close(out.latent, mean, rtol=0, atol=0)
    torch.testing.assert_close(out.image, model.vqgan.decode(mean)[0], rtol=0, atol=0)
    model.train()
    target = torch.randn(2, 3, 8, 12)
    loss = model.latent_regression_loss(LOW, target)
    diff = model.latent(LOW) - target
    torch.testing.assert_close(loss, diff.abs().mean() + diff.pow(2).mean())
    loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == _trainable(model)
    with pytest.raises(ValueError, match="needs the flow"):
        model.nll(LOW, target)
    with pytest.raises(ValueError, match="needs the flow"):
        model.latent(LOW, heat=0.5)


def test_flow_regression_loss_is_the_stage2_one():
    model = tiny(aft=False)
    target = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(model.latent_regression_loss(LOW, target),
                               model.stage2.latent_regression_loss(LOW, target))
    assert model.nll(LOW, target, use_gt_mean=False).shape == (2,)


# --- conversion -----------------------------------------------------------------------------------------------

def test_converter_round_trip_through_the_release_layout():
    model = tiny().eval()
    net_g, vq = official_state_dicts(model)
    assert {k.split(".")[0] for k in net_g} == {"RRDB", "flowUpsamplerNet", "deformable_decoder"}
    assert set(vq) == set(model.vqgan.state_dict())
    assert official_key(model, "stage2.flow.steps.1.coupling.self_affine.net.0.weight") == (
        "flowUpsamplerNet.layers.1.affine.fAffine.0.weight")
    fresh = create_model("glare_test")
    wrapped = {f"module.{k}": v for k, v in net_g.items()}  # DataParallel checkpoints load too
    fresh.load_state_dict(convert_official_state_dict(wrapped, fresh, vq), strict=True)
    torch.testing.assert_close(fresh.state_dict(), model.state_dict(), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(LOW), model(LOW), rtol=0, atol=0)


def test_converter_drops_dead_weights_only_for_a_lean_model_and_rejects_unknown_keys():
    torch.manual_seed(0)
    full = create_model("glare_test", unused_layers=True)
    net_g, vq = official_state_dicts(full)
    lean = create_model("glare_test")
    lean.load_state_dict(convert_official_state_dict(net_g, lean, vq), strict=True)
    with pytest.raises(KeyError):
        convert_official_state_dict({**net_g, "RRDB.extra.weight": torch.zeros(1)}, lean, vq)
    with pytest.raises(KeyError, match="no MFD"):
        convert_official_state_dict(net_g, create_model("glare_test", unused_layers=True, aft=False))


def test_load_released_files(tmp_path):
    source = tiny()
    net_g, vq = official_state_dicts(source)
    torch.save(net_g, tmp_path / "net_G.pth")
    torch.save(vq, tmp_path / "vqgan.pkl")
    stage2_only = {k: v for k, v in net_g.items() if not k.startswith("deformable_decoder.")}
    torch.save(stage2_only, tmp_path / "58250_G.pth")

    model = create_model("glare_test")
    assert model.load_released(tmp_path / "net_G.pth", tmp_path / "vqgan.pkl") == [
        "stage2", "deformable_decoder", "vqgan"]
    torch.testing.assert_close(model.state_dict(), source.state_dict(), rtol=0, atol=0)

    start = create_model("glare_test")  # Stage III starts from a Stage-II checkpoint: the MFD is left as it is
    decoder_before = {k: v.clone() for k, v in start.deformable_decoder.state_dict().items()}
    assert start.load_released(tmp_path / "58250_G.pth") == ["stage2"]
    torch.testing.assert_close(start.deformable_decoder.state_dict(), decoder_before, rtol=0, atol=0)
    torch.testing.assert_close(start.stage2.state_dict(), source.stage2.state_dict(), rtol=0, atol=0)

    broken = dict(net_g)
    broken.pop("deformable_decoder.mix.0.w")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="missing weights"):
        create_model("glare_test").load_released(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError):
        create_model("glare_test").load_released(tmp_path / "absent.pth")


def test_benchmark_references_are_our_exact_counts_at_the_registry_sizes():
    from ablations.framework.benchmarks import load_reference_file, reference_files

    path = next(p for p in reference_files() if p.parent.name == "glare")
    references = load_reference_file(path)
    assert set(references) == {"glare", "glare_vqgan", "glare_stage2", "glare_decoder"}
    for name, entry in references.items():
        with torch.device("meta"):
            model = create_model(name)
        assert _count(model.parameters()) == entry["values"]["params_total"], name
        assert tuple(entry["input_size"]) == model_info(name).input_size, name
