"""CSWin-UNet: parameter counts, ablation knobs, official layout and pretrained loading."""
from __future__ import annotations

import pytest
import torch

from models import create_model
from models.cswin_unet import (
    CSWinUNet,
    convert_official_state_dict,
    load_cswin_imagenet_weights,
    official_key,
    to_official_state_dict,
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_configuration_has_the_official_parameter_count():
    assert n_params(create_model("cswin_unet", num_classes=9)) == 23_568_492


def test_carafe_parameter_counts_match_the_release():
    model = create_model("cswin_unet")
    counts = [n_params(level.upsample) for level in model.decoder] + [n_params(model.final_upsample)]
    assert counts == [238_500, 70_116, 22_788, 26_080]


@pytest.mark.parametrize("upsampler", ["carafe", "bilinear", "transposed"])
@pytest.mark.parametrize("num_skips", [3, 2, 1, 0])
def test_ablation_variants_build_and_run(upsampler, num_skips):
    model = create_model("cswin_unet_test", upsampler=upsampler, num_skips=num_skips)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 9, 64, 64)
    assert len(model.skip_scales) == num_skips


def test_skips_are_removed_from_the_coarsest_scale_first():
    assert create_model("cswin_unet_test", num_skips=2).skip_scales == ["1/8", "1/4"]
    assert create_model("cswin_unet_test", num_skips=1).skip_scales == ["1/4"]
    # a removed skip drops its Linear: 512→256 concat Linear (131,328 params) at 1/16
    assert n_params(create_model("cswin_unet")) - n_params(create_model("cswin_unet", num_skips=2)) == 131_328


def test_removed_skips_are_ignored_by_their_decoder_level():
    model = create_model("cswin_unet_test", num_skips=1).eval()
    coarse, fine = model.decoder[0], model.decoder[2]  # 1/16 (removed) and 1/4 (kept)
    x = torch.randn(1, 2, 2, 128)  # test model: dims 16-32-64-128, maps 16-8-4-2
    with torch.no_grad():
        torch.testing.assert_close(coarse(x, torch.randn(1, 4, 4, 64)), coarse(x, torch.zeros(1, 4, 4, 64)))
        x = torch.randn(1, 8, 8, 32)
        assert not torch.allclose(fine(x, torch.randn(1, 16, 16, 16)), fine(x, torch.zeros(1, 16, 16, 16)))


def test_depths_are_mirrored_by_the_decoder():
    model = create_model("cswin_unet_test", depths=(1, 2, 3, 1))
    assert [len(s) for s in model.encoder] == [1, 2, 3, 1]
    assert [len(level.blocks) for level in model.decoder] == [3, 2, 1] and len(model.bottleneck) == 1


def test_single_channel_input_is_repeated_like_the_release_wrapper():
    model = create_model("cswin_unet_test").eval()
    s = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(s), model(s.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 2, 64, 64))
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 1, 64, 80 + 4))


def test_invalid_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="num_skips"):
        CSWinUNet(num_skips=4)
    with pytest.raises(ValueError, match="depths needs 4"):
        CSWinUNet(depths=(1, 2, 9))


def test_official_layout_round_trip():
    model = create_model("cswin_unet_test", depths=(1, 2, 2, 1))
    official = to_official_state_dict(model.state_dict())
    assert all(k.startswith("cswin_unet.") for k in official)
    assert "cswin_unet.stage_up3.1.attns.1.get_v.weight" in official
    assert "cswin_unet.upsample1.encoder.weight" in official and "cswin_unet.concat_linear4.weight" in official
    back = convert_official_state_dict(official, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_converter_rejects_unknown_official_keys():
    model = create_model("cswin_unet_test")
    official = to_official_state_dict(model.state_dict())
    official["cswin_unet.head.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="no counterpart"):
        convert_official_state_dict(official, model)


def _fake_cswin_t_checkpoint(model: CSWinUNet, extra_stage3_blocks: int = 3) -> dict[str, torch.Tensor]:
    """An ImageNet-style CSWin-T state dict: encoder keys only, more stage-3 blocks, a classifier head."""
    encoder_like = {official_key(k): torch.randn_like(v) for k, v in model.state_dict().items()
                    if not k.startswith(("bottleneck", "decoder", "final_upsample", "head"))}
    depth3 = len(model.encoder[2])
    for key in [k for k in encoder_like if k.startswith("stage3.0.")]:
        for extra in range(depth3, depth3 + extra_stage3_blocks):
            encoder_like[key.replace("stage3.0.", f"stage3.{extra}.")] = torch.randn_like(encoder_like[key])
    encoder_like["head.weight"] = torch.randn(1000, model.encoder_norm.weight.numel())
    return encoder_like


def test_pretrained_loading_initialises_decoder_blocks_from_encoder_blocks(tmp_path):
    model = create_model("cswin_unet_test", depths=(1, 2, 2, 1))
    carafe_before = model.decoder[0].upsample.upsampler.compressor.weight.clone()
    ckpt = _fake_cswin_t_checkpoint(model)
    path = tmp_path / "cswin_tiny_224.pth"
    torch.save({"state_dict_ema": ckpt}, path)
    report = load_cswin_imagenet_weights(model, path)
    sd = model.state_dict()
    # encoder stage 3 block 1 and decoder stage_up3 block 1 both come from CSWin-T stage3.1
    torch.testing.assert_close(sd["encoder.2.1.attn.qkv.weight"], ckpt["stage3.1.qkv.weight"])
    torch.testing.assert_close(sd["decoder.0.blocks.1.attn.qkv.weight"], ckpt["stage3.1.qkv.weight"])
    torch.testing.assert_close(sd["bottleneck.0.mlp.fc1.weight"], ckpt["stage4.0.mlp.fc1.weight"])
    torch.testing.assert_close(sd["stem.conv.weight"], ckpt["stage1_conv_embed.0.weight"])
    torch.testing.assert_close(sd["encoder_norm.weight"], ckpt["norm.weight"])
    # CARAFE, skip Linears, decoder norm and head keep their random init
    torch.testing.assert_close(model.decoder[0].upsample.upsampler.compressor.weight, carafe_before)
    assert {"head.weight", "decoder_norm.weight", "decoder.0.skip_fusion.weight"} <= set(report.random_init)
    assert "stage3.3.qkv.weight" in report.ignored and "head.weight" in report.ignored


def test_pretrained_argument_is_read_by_load_pretrained_only(tmp_path):
    missing = create_model("cswin_unet_test", pretrained=str(tmp_path / "missing.pth"))  # the constructor reads nothing
    with pytest.raises(FileNotFoundError, match="CSWin-T"):
        missing.load_pretrained()
    assert create_model("cswin_unet_test").load_pretrained() is None  # pretrained=None: no-op
    model = create_model("cswin_unet_test")
    path = tmp_path / "w.pth"
    torch.save({"state_dict_ema": _fake_cswin_t_checkpoint(model)}, path)
    torch.manual_seed(1)
    loaded = create_model("cswin_unet_test", pretrained=str(path))
    before = loaded.state_dict()["encoder.0.0.norm1.weight"].clone()
    report = loaded.load_pretrained()
    expected = torch.load(path, weights_only=True)["state_dict_ema"]["stage1.0.norm1.weight"]
    assert not torch.equal(before, expected)
    torch.testing.assert_close(loaded.state_dict()["encoder.0.0.norm1.weight"], expected)
    assert "encoder.0.0.norm1.weight" in report.loaded
