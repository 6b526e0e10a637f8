"""ConvFormer's reconstructed Table 1 hosts: TransUNet (R50-ViT-B/16) and Patcher, five attention types each."""
from __future__ import annotations

import pytest
import torch

from models import create_model, input_size_for
from models.convformer_patcher import ConvFormerPatcher, reduced_grid_distance
from models.convformer_transunet import ConvFormerTransUNet
from models.layers.convformer import grid_distance
from models.layers.transunet import ResNetV2SkipEncoder
from models.layers.vit_variants import ATTENTION_TYPES

HOSTS = {"transunet": "convformer_transunet_test", "patcher": "convformer_patcher_test"}

# Parameter counts of the 256² paper configurations: OURS, regression values (the hosts
# are reconstructed from bytecode; no official count or fixture exists).
# (attention) → (1 channel / 4 classes, 3 channels / 2 classes)
PINNED = {
    ConvFormerTransUNet: {
        "vanilla": (105_322_436, 105_322_146),
        "reattention": (105_325_892, 105_325_602),
        "layerscale": (105_323_972, 105_323_682),
        "refiner": (105_338_996, 105_338_706),
        "convformer": (281_276_756, 281_276_466),
    },
    ConvFormerPatcher: {
        "vanilla": (23_194_184, 23_199_942),
        "reattention": (23_194_545, 23_200_303),
        "layerscale": (23_196_232, 23_201_990),
        "refiner": (23_199_145, 23_204_903),
        "convformer": (23_194_249, 23_200_007),
    },
}


def _tiny(host: str, attention: str, **kwargs):
    torch.manual_seed(0)
    return create_model(HOSTS[host], attention=attention, **kwargs)


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_backward_every_attention(host, attention, in_channels):
    net = _tiny(host, attention, in_channels=in_channels, num_classes=3)
    x = torch.randn(2, in_channels, 64, 64)
    out = net(x)
    assert out.shape == (2, 3, 64, 64)
    out.mean().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable), \
        [n for n, p in trainable if p.grad is None]


@pytest.mark.parametrize("host,attention", [("transunet", "convformer"), ("transunet", "vanilla"),
                                            ("patcher", "convformer"), ("patcher", "vanilla")])
def test_320_input(host, attention):
    # img_size stays 64: the vanilla TransUNet resamples its position embedding to the 20×20 grid.
    net = _tiny(host, attention).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 320, 320))
    assert out.shape == (1, 4, 320, 320) and torch.isfinite(out).all()


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_transunet_attention_recording(attention):
    net = _tiny("transunet", attention).eval()  # 64² → 4×4 grid, 2 heads
    assert all(m.last_attention is None for m in net.attention_modules())
    net.record_attention(True)
    with torch.no_grad():
        net(torch.randn(2, 1, 64, 64))
    assert [tuple(a.shape) for a in net.attention_maps()] == [(2, 2, 16, 16)]
    net.record_attention(False)
    assert net.attention_maps() == [None]


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_patcher_attention_recording(attention):
    net = _tiny("patcher", attention).eval()
    net.record_attention(True)
    with torch.no_grad():
        net(torch.randn(2, 1, 64, 64))
    # (B·L, heads, N, N_k) per stage at 64², P = 32, c = 8:
    # 1: 2×2 large patches of 48² px → 12² tokens, SR 2 → 6²;  2: 16² map → one patch 32² → 16², SR → 8²;
    # 3: 8² → 24² px → 12², SR → 6²;  4: 4² → 20² px → 10², SR 1.
    assert [tuple(a.shape) for a in net.attention_maps()] == [
        (8, 1, 144, 36), (2, 2, 256, 64), (2, 2, 144, 36), (2, 4, 100, 100)]


def test_patcher_convformer_prior():
    assert torch.equal(reduced_grid_distance(5, 7, 1), grid_distance(5, 7))
    dis = reduced_grid_distance(4, 6, 2)  # keys at rows (1, 3), columns (1, 3, 5)
    assert dis.shape == (24, 6) and dis[1 * 6 + 3, 0 * 3 + 1] == 0  # query (1, 3) sits on key (0, 1)
    assert torch.isclose(dis[0, 0], torch.tensor((1 / 4) ** 2 + (1 / 6) ** 2))
    attn = _tiny("patcher", "convformer").stages[0].blocks[0].attn
    with torch.no_grad():
        attn.theta.fill_(-30.0)  # σ → σ_min: the plain exp/Σexp would be 0/0 on the SR grid
        prior = attn.gaussian_prior(12, 12)
    assert torch.isfinite(prior).all() and torch.allclose(prior.sum(-1), torch.ones(1, 144))


def test_transunet_skip_encoder_follows_transunet_padding():
    enc = ResNetV2SkipEncoder(3, layers=(1, 1, 1), channels=(128, 256, 512), stem_channels=32).eval()
    with torch.no_grad():
        out, skips = enc(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 512, 4, 4)
    assert [tuple(s.shape) for s in skips] == [(1, 256, 8, 8), (1, 128, 16, 16), (1, 32, 32, 32)]
    # unpadded stem pool: 32 → 15, the 1/4 skip is zero-padded at the bottom/right back to 16
    assert skips[1][..., -1, :].abs().sum() == 0 and skips[1][..., :, -1].abs().sum() == 0
    assert skips[1][..., :-1, :-1].abs().sum() > 0


def test_transunet_repeats_gray_input():
    net = _tiny("transunet", "vanilla").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x.repeat(1, 3, 1, 1)))


@pytest.mark.parametrize("cls", [ConvFormerTransUNet, ConvFormerPatcher])
def test_pinned_parameter_counts_at_256(cls):
    """Regression values (ours), counted on the meta device: no weights, no forward."""
    def count(**kwargs) -> int:
        return sum(p.numel() for p in cls(img_size=256, **kwargs).parameters())

    with torch.device("meta"):
        counts = {a: tuple(count(num_classes=k, in_channels=c, attention=a) for c, k in ((1, 4), (3, 2)))
                  for a in ATTENTION_TYPES}
    assert counts == PINNED[cls]


def test_registry_entries():
    for name, cls in (("convformer_transunet", ConvFormerTransUNet), ("convformer_patcher", ConvFormerPatcher)):
        with torch.device("meta"):
            net = create_model(name, attention="convformer")
        assert isinstance(net, cls) and net.attention == "convformer" and net.img_size == 256
        assert input_size_for(net) == (1, 256, 256)
    with pytest.raises(ValueError, match="attention must be one of"):
        ConvFormerPatcher(attention="nope")
