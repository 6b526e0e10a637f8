"""ConvFormer layers and the anti-collapse token attentions against independent references."""
from __future__ import annotations

import math

import pytest
import torch

from models.layers.convformer import (
    CNNStyleAttention,
    ConvFeedForward,
    ConvFormerBlock,
    ConvFormerEncoder,
    ConvFormerPooling,
    grid_distance,
    official_convformer_encoder_key,
    official_pooling_key,
)
from models.layers.vit_variants import (
    ATTENTION_TYPES,
    TokenAttention,
    TransformerEncoder,
    official_token_encoder_key,
)


def release_distance(side: int) -> torch.Tensor:
    """The release's relative_pos_dis(side, side): relative coordinates of the flattened grid, /side, squared."""
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[:, :, 0].float() / side) ** 2 + (rel[:, :, 1].float() / side) ** 2


def csa_reference(module: CNNStyleAttention, x: torch.Tensor) -> torch.Tensor:
    """Per head and query pixel, straight from spec §2.3 (loops over heads, explicit Gaussian)."""
    b, _, h, w = x.shape
    d = module.dim_head
    qkv = module.qkv(x).flatten(2)  # (B, 3·inner, N)
    inner = module.heads * d
    ys, xs = torch.arange(h * w) // w, torch.arange(h * w) % w
    dis = ((ys[:, None] - ys[None]) / h) ** 2 + ((xs[:, None] - xs[None]) / w) ** 2
    outs = []
    for g in range(module.heads):
        q = qkv[:, g * d:(g + 1) * d].transpose(1, 2)
        k = qkv[:, inner + g * d:inner + (g + 1) * d].transpose(1, 2)
        v = qkv[:, 2 * inner + g * d:2 * inner + (g + 1) * d].transpose(1, 2)
        cos = q @ k.transpose(1, 2) / (
            torch.sqrt((q**2).sum(-1, keepdim=True) + 1e-4) * torch.sqrt((k**2).sum(-1)[:, None] + 1e-4) + 1e-4)
        sigma = 0.003 + (module.sigma_max - 0.003) * torch.sigmoid(module.theta[g])
        m = torch.exp(-dis.to(x.dtype) / (2 * sigma**2))
        outs.append((cos * (m / m.sum(-1, keepdim=True))) @ v)
    out = torch.cat(outs, dim=-1).transpose(1, 2).reshape(b, inner, h, w)
    return module.proj(out)


def test_distance_map_equals_release_at_32_and_is_recomputed_per_size():
    dis = grid_distance(32, 32)
    torch.testing.assert_close(dis, release_distance(32), rtol=0, atol=0)
    assert math.isclose(dis.max().item(), 2 * (31 / 32) ** 2, rel_tol=1e-6)
    module = CNNStyleAttention(16, heads=2, dim_head=8)
    for h, w in [(32, 32), (40, 40), (6, 10)]:
        cached = module.distance(h, w, torch.device("cpu"), torch.float32)
        assert cached.shape == (h * w, h * w)
        assert module.distance(h, w, torch.device("cpu"), torch.float32) is cached  # cached once per size
    torch.testing.assert_close(module.distance(40, 40, torch.device("cpu"), torch.float32), release_distance(40))
    assert not any("dis" in k for k in module.state_dict())


def test_distance_first_built_in_inference_mode_serves_training():
    """A test or validation pass before training builds the cached map; the backward can still save it."""
    module = CNNStyleAttention(16, heads=2, dim_head=8)
    x = torch.randn(1, 16, 6, 6)
    with torch.inference_mode():
        expected = module(x)
    assert not module.distance(6, 6, torch.device("cpu"), torch.float32).is_inference()
    out = module(x)
    out.sum().backward()
    assert module.theta.grad is not None and torch.isfinite(module.theta.grad).all()
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)


def test_patcher_distance_first_built_in_inference_mode_serves_training():
    from models.convformer_patcher import PatcherAttention

    module = PatcherAttention(32, heads=2, sr_ratio=2, kind="convformer")
    x = torch.randn(1, 64, 32)
    with torch.inference_mode():
        module(x, (8, 8))
    module(x, (8, 8)).sum().backward()
    assert module.theta.grad is not None


@pytest.mark.parametrize("heads,dim_head,hw", [(2, 8, (4, 6)), (1, 16, (5, 5))])
def test_csa_matches_reference_on_any_grid(heads, dim_head, hw):
    module = CNNStyleAttention(16, heads=heads, dim_head=dim_head, sigma_max=0.3).double().eval()
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    torch.testing.assert_close(module(x), csa_reference(module, x))
    assert isinstance(module.proj, torch.nn.Identity) == (heads == 1 and dim_head == 16)


def test_csa_sigma_range_and_recording():
    module = CNNStyleAttention(8, heads=4, dim_head=4, sigma_min=0.01, sigma_max=0.2)
    module.theta.data = torch.tensor([-50.0, -1.0, 1.0, 50.0])
    sigma = module.sigma()
    assert 0.01 <= sigma.min() and sigma.max() <= 0.2 and torch.all(sigma[1:] > sigma[:-1])
    x = torch.randn(3, 8, 5, 7)
    module(x)
    assert module.last_attention is None
    module.record_attention = True
    module(x)
    attn = module.last_attention
    assert attn.shape == (3, 4, 35, 35) and not attn.requires_grad
    prior = module.gaussian_prior(5, 7)
    torch.testing.assert_close(prior.sum(-1), torch.ones(4, 35))
    assert torch.all(attn.abs() <= prior + 1e-6)  # |cos| <= 1 times the prior


def test_pooling_shapes_and_widths():
    assert ConvFormerPooling(1, 32)(torch.randn(2, 1, 48, 80)).shape == (2, 32, 6, 10)
    assert ConvFormerPooling(12, 16, num_downsamples=0)(torch.randn(1, 12, 5, 5)).shape == (1, 16, 5, 5)
    four = ConvFormerPooling(3, 16, num_downsamples=4, widths=(4, 8, 8, 8))
    assert four(torch.randn(1, 3, 32, 32)).shape == (1, 16, 2, 2)
    with pytest.raises(ValueError, match="widths"):
        ConvFormerPooling(3, 16, num_downsamples=4)
    channels = [m.out_channels for m in ConvFormerPooling(1, 512).modules() if isinstance(m, torch.nn.Conv2d)]
    assert channels == [64, 128, 256, 512]


def test_block_is_two_residuals_without_norm():
    block = ConvFormerBlock(16, heads=2, dim_head=8, mlp_dim=32).eval()
    x = torch.randn(2, 16, 4, 4)
    y = x + block.attn(x)
    torch.testing.assert_close(block(x), y + block.ffn(y))
    assert (ConvFeedForward(16, 32)(x) >= 0).all()
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in ConvFormerEncoder(16, 2, 2, 8, 32).modules())


def test_official_convformer_keys():
    enc = ConvFormerEncoder(16, 2, 2, 8, 32)
    keys = {official_convformer_encoder_key(k) for k in enc.state_dict()}
    assert {"layers.1.0.headsita", "layers.0.0.to_qkv.weight", "layers.0.0.to_out.1.running_var",
            "layers.1.1.net.4.bias", "layers.0.1.net.3.weight"} <= keys
    assert len(keys) == len(enc.state_dict())
    pool = {official_pooling_key(k) for k in ConvFormerPooling(1, 8).state_dict()}
    assert "down3.maxpool_conv.1.single_conv.0.weight" in pool and "inc.single_conv.1.num_batches_tracked" in pool


# ------------------------------------------------------------------------------------------------
# Token attention variants
# ------------------------------------------------------------------------------------------------
def explicit_softmax_attention(module: TokenAttention, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    q, k, v = module.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, module.heads, module.dim_head).transpose(1, 2) for t in (q, k, v))
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(module.dim_head), -1), v


@pytest.mark.parametrize("kind", ["vanilla", "reattention", "refiner"])
def test_token_attention_kinds_match_reference_and_record(kind):
    module = TokenAttention(12, heads=3, dim_head=4, kind=kind).double().eval()
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    attn, v = explicit_softmax_attention(module, x)
    if kind == "reattention":
        attn = torch.stack([sum(module.head_mix[g, h] * attn[:, h] for h in range(3)) for g in range(3)], 1)
    elif kind == "refiner":
        attn = module.adapt_bn(module.refine(attn))
    expected = module.proj((attn @ v).transpose(1, 2).reshape(2, 9, 12))
    torch.testing.assert_close(module(x), expected)
    assert module.last_attention is None
    module.record_attention = True
    torch.testing.assert_close(module(x), expected)
    assert module.last_attention.shape == (2, 3, 9, 9)
    torch.testing.assert_close(module.last_attention, attn)


def test_reattention_parameters_and_norm_switch():
    module = TokenAttention(16, 8, 2, kind="reattention")
    assert module.head_mix.shape == (8, 8) and not module.head_mix_pre.requires_grad
    assert module.head_norm is None
    normed = TokenAttention(16, 8, 2, kind="reattention", reattention_norm=True)
    assert isinstance(normed.head_norm, torch.nn.BatchNorm2d)
    with pytest.raises(ValueError):
        TokenAttention(16, 8, 2, kind="layerscale")


def test_layerscale_shared_and_per_layer():
    shared = TransformerEncoder(16, 3, 2, 8, 32, attention="layerscale")
    gammas = [n for n, _ in shared.named_parameters() if "gamma" in n]
    assert gammas == ["ls1.gamma", "ls2.gamma"]
    assert torch.all(shared.ls1.gamma == 1e-4)
    per_layer = TransformerEncoder(16, 3, 2, 8, 32, attention="layerscale", share_layerscale=False)
    assert len([n for n, _ in per_layer.named_parameters() if "gamma" in n]) == 6
    one = TransformerEncoder(16, 1, 2, 8, 32, attention="layerscale").eval()
    one.ls1.gamma.data.uniform_()
    one.ls2.gamma.data.uniform_()
    x, blk = torch.randn(2, 5, 16), one.blocks[0]
    y = x + one.ls1.gamma * blk.attn(blk.norm1(x))
    torch.testing.assert_close(one(x), y + one.ls2.gamma * blk.mlp(blk.norm2(y)))


@pytest.mark.parametrize("attention", [a for a in ATTENTION_TYPES if a != "convformer"])
def test_transformer_encoder_variants(attention):
    enc = TransformerEncoder(16, 2, 2, 8, 32, attention=attention, final_norm=True)
    x = torch.randn(2, 6, 16)
    assert enc(x).shape == x.shape
    for module in enc.attention_modules():
        module.record_attention = True
    enc(x)
    assert all(m.last_attention.shape == (2, 2, 6, 6) for m in enc.attention_modules())
    assert len({official_token_encoder_key(k) for k in enc.state_dict()}) == len(enc.state_dict())


def test_transformer_encoder_rejects_convformer():
    with pytest.raises(ValueError, match="ConvFormerEncoder"):
        TransformerEncoder(16, 1, 2, 8, 32, attention="convformer")
