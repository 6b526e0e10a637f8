"""ConvFormer's SETR family: exact parameter counts, conversion, other input sizes, attention recording."""
from __future__ import annotations

import pytest
import torch

from models import create_model, input_size_for, list_models
from models.convformer_setr import SETR, convert_official_state_dict, official_key, to_official_state_dict

# (entry, attention, official count at 1 channel / 4 classes): spec §2.8; setr and
# setr_convformer are the manifests' exact counts, the others the release's structure
# (Re-attention + 12·2·8², LayerScale + 2·512, Refiner + 12·728) within §2.8's rounding.
COUNTS = [
    ("setr", "vanilla", 39_106_052),
    ("setr_reattention", "reattention", 39_107_588),
    ("setr_layerscale", "layerscale", 39_107_076),
    ("setr_refiner", "refiner", 39_114_788),
    ("setr_convformer", "convformer", 115_609_124),
]
TINY = dict(dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64, pooling_widths=(8, 8, 16))


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,attention,official", COUNTS, ids=[c[0] for c in COUNTS])
def test_exact_official_parameter_counts(name, attention, official):
    model = create_model(name)
    assert model.attention == attention and model.num_classes == 4 and model.img_size == 256
    assert num_params(model) == official
    assert round(official / 1e6, 3) == {"setr": 39.106, "setr_reattention": 39.108, "setr_layerscale": 39.107,
                                        "setr_refiner": 39.115, "setr_convformer": 115.609}[name]


def test_isic_configuration_counts():
    assert num_params(SETR(num_classes=2, in_channels=3)) == 39_171_330
    assert num_params(SETR(num_classes=2, in_channels=3, attention="convformer")) == 115_610_018


def test_registry_entries():
    assert {"setr", "setr_reattention", "setr_layerscale", "setr_refiner", "setr_convformer",
            "convformer_setr_test"} <= set(list_models(paper="convformer"))
    assert input_size_for(SETR(img_size=64, **TINY)) == (1, 64, 64)
    assert input_size_for(SETR(img_size=64, in_channels=3, **TINY)) == (3, 64, 64)  # an RGB (ISIC) configuration


@pytest.mark.parametrize("attention", ["vanilla", "reattention", "layerscale", "refiner", "convformer"])
def test_official_names_round_trip(attention):
    model = SETR(attention=attention, img_size=32, **TINY).eval()
    official = to_official_state_dict(model)
    assert len(official) == len(model.state_dict())
    other = SETR(attention=attention, img_size=32, **TINY).eval()
    other.load_state_dict(convert_official_state_dict(official, other), strict=True)
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(other(x), model(x))
    with pytest.raises(KeyError, match="no counterpart"):
        convert_official_state_dict({"bogus.weight": torch.zeros(1)}, model)


def test_official_key_examples():
    assert official_key("encoder.blocks.3.attn.theta", "convformer") == "transformer.layers.3.0.headsita"
    assert official_key("encoder.blocks.0.mlp.fc2.bias") == "transformer.layers.0.1.fn.net.3.bias"
    assert official_key("encoder.blocks.2.attn.head_mix", "reattention") == "transformer.layers.2.0.fn.proj_post.weight"
    assert official_key("encoder.ls1.gamma", "layerscale") == "transformer.gamma_1"
    assert official_key("encoder.blocks.0.attn.refine.dw.weight", "refiner") == \
        "transformer.layers.0.0.fn.DLA.depth_sep_conv.weight"
    assert official_key("pooling.downs.2.1.bn.running_var", "convformer") == \
        "cnn_encoder.down3.maxpool_conv.1.single_conv.1.running_var"
    assert official_key("decoder.head.weight") == "decoder.8.weight"


def test_convformer_runs_at_320():
    model = SETR(num_classes=3, img_size=256, attention="convformer", **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 320, 320)).shape == (1, 3, 320, 320)
    assert model.encoder.blocks[0].attn.distance(40, 40, torch.device("cpu"), torch.float32).shape == (1600, 1600)


def test_vanilla_interpolates_positional_embedding_at_other_sizes():
    model = SETR(num_classes=3, img_size=64, **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 80, 96)).shape == (1, 3, 80, 96)
        at_size = model.positional_embedding(8, 8)
    assert at_size is model.pos_embed
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 60, 64))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("attention", ["vanilla", "refiner", "convformer"])
def test_attention_recording(attention):
    model = SETR(attention=attention, img_size=32, **{**TINY, "depth": 2}).eval()
    x = torch.randn(2, 1, 32, 32)
    model(x)
    assert model.attention_maps() == [None, None]
    model.record_attention(True)
    with torch.no_grad():
        model(x)
    assert [tuple(a.shape) for a in model.attention_maps()] == [(2, 2, 16, 16)] * 2
    model.record_attention(False)
    assert model.attention_maps() == [None, None]


def test_reattention_unused_matrix_is_frozen_and_trains_like_release():
    model = SETR(attention="reattention", img_size=32, **TINY)
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    attn = model.encoder.blocks[0].attn
    assert attn.head_mix.grad is not None and attn.head_mix_pre.grad is None and not attn.head_mix_pre.requires_grad
