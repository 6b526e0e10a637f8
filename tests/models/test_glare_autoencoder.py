"""GLARE Stage I (VQGAN + vector quantiser) and the Stage-III multi-scale decoder."""
from __future__ import annotations

import json
import math

import pytest
import torch

from models import create_model
from models.glare_decoder import MultiScaleDecoder, mean_ratio_fuse
from models.glare_decoder import convert_official_state_dict as convert_decoder
from models.glare_vqgan import GlareVQGAN, load_released_vqgan
from models.glare_vqgan import convert_official_state_dict as convert_vqgan
from models.layers.vector_quantizer import VectorQuantizer
from models.official import fixtures_root

GLARE_FIXTURES = fixtures_root() / "glare"


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _on_meta(cls, **kwargs):
    with torch.device("meta"):  # full-size models without allocating or initialising weights
        return cls(**kwargs)


# --- parameter counts and names ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,unused,expected", [
    (GlareVQGAN, True, 62_907_614), (GlareVQGAN, False, 60_581_022),
    (MultiScaleDecoder, True, 44_035_040), (MultiScaleDecoder, False, 38_701_789),
])
def test_exact_parameter_counts(cls, unused, expected):
    assert _count(_on_meta(cls, unused_layers=unused)) == expected


@pytest.mark.parametrize("cls,component", [(GlareVQGAN, "vqgan"), (MultiScaleDecoder, "stage3_decoder")])
def test_names_and_shapes_equal_the_manifest(cls, component):
    path = GLARE_FIXTURES / component / "manifest.json"
    if not path.is_file():
        pytest.skip(f"official manifest not found at {path}")
    manifest = json.loads(path.read_text())
    ours = {k: list(v.shape) for k, v in _on_meta(cls).state_dict().items()}
    assert ours == {name: shape for name, shape in manifest["params"] + manifest["buffers"]}
    assert _count(_on_meta(cls)) == manifest["num_params"]


def test_unused_layer_switch_drops_exactly_the_unused_layers():
    full, core = _on_meta(GlareVQGAN), _on_meta(GlareVQGAN, unused_layers=False)
    dropped = set(full.state_dict()) - set(core.state_dict())
    assert set(core.state_dict()) <= set(full.state_dict())
    assert {k.split(".")[0] for k in dropped} == {"conv_semantic", "vgg_feat_extractor"}
    assert not any(p.requires_grad for p in full.vgg_feat_extractor.parameters())  # frozen as released
    full, core = _on_meta(MultiScaleDecoder), _on_meta(MultiScaleDecoder, unused_layers=False)
    dropped = set(full.state_dict()) - set(core.state_dict())
    assert {k.split(".")[0] for k in dropped} == {"conv_out", "scale", "bias", "enc"}


def test_unused_layers_never_change_the_outputs():
    torch.manual_seed(0)
    kw = dict(resolution=32, n_embed=16, ch=32, num_res_blocks=1, attn_resolutions=(8,))
    full, core = GlareVQGAN(**kw).eval(), GlareVQGAN(**kw, unused_layers=False).eval()
    core.load_state_dict(convert_vqgan(full.state_dict(), core))  # official unused keys are dropped
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(full(x), core(x), rtol=0, atol=0)
    kw = dict(ch=32, num_res_blocks=1, resolution=16, attn_resolutions=(4,))
    full, core = MultiScaleDecoder(**kw), MultiScaleDecoder(**kw, unused_layers=False)
    core.load_state_dict(convert_decoder(full.state_dict(), core))
    inputs = full.example_inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(full(*inputs), core(*inputs), rtol=0, atol=0)


def test_converters_reject_unknown_keys_and_accept_release_wrappers():
    vq = create_model("glare_vqgan_test")
    state = {f"module.{k}": v for k, v in vq.state_dict().items()}
    assert set(convert_vqgan({"state_dict": state}, vq)) == set(vq.state_dict())
    with pytest.raises(KeyError, match="without a counterpart"):
        convert_vqgan({**vq.state_dict(), "encoder.extra.weight": torch.zeros(1)}, vq)
    dec = create_model("glare_decoder_test")
    net_g = {f"deformable_decoder.{k}": v for k, v in dec.state_dict().items()}
    net_g["RRDB.encoder.conv_in.weight"] = torch.zeros(1)  # another module of a Stage-III net_G checkpoint
    dec.load_state_dict(convert_decoder(net_g, dec), strict=True)
    with pytest.raises(KeyError, match="without a counterpart"):
        convert_decoder({**dec.state_dict(), "warp.9.offset.weight": torch.zeros(1)}, dec)


# --- vector quantiser ----------------------------------------------------------------------------------------

def _hand_quantizer(legacy: bool = False) -> VectorQuantizer:
    vq = VectorQuantizer(n_e=2, e_dim=3, beta=0.25, legacy=legacy)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    return vq


def _hand_latent() -> torch.Tensor:
    # two vectors (1, 3, 1, 2): a = (0.1, 0.2, 0.0) → code 0 (|a−e0|² = 0.05), b = (1.0, 0.5, 1.0) → code 1 (0.25)
    return torch.tensor([[0.1, 1.0], [0.2, 0.5], [0.0, 1.0]]).view(1, 3, 1, 2).requires_grad_(True)


def test_quantiser_hand_checked_loss_and_indices():
    z = _hand_latent()
    z_q, loss, (_, _, indices) = _hand_quantizer()(z)
    assert indices.tolist() == [0, 1]
    torch.testing.assert_close(z_q.detach(), torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]).view(1, 3, 1, 2))
    # mse = (0.05 + 0.25) / 6 = 0.05; loss = β·mse + mse = 0.0625
    assert loss.item() == pytest.approx(0.0625, abs=1e-7)


@pytest.mark.parametrize("legacy", [False, True])
def test_quantiser_gradients(legacy):
    vq = _hand_quantizer(legacy)
    z = _hand_latent()
    z_q, loss, _ = vq(z)
    (grad_z_st,) = torch.autograd.grad(z_q.sum(), z, retain_graph=True)
    torch.testing.assert_close(grad_z_st, torch.ones_like(z))  # straight-through: ∂z_q/∂z = I
    assert vq.embedding.weight.grad is None
    loss.backward()
    diff = (z - z_q).detach()  # z − e[index], (1, 3, 1, 2)
    n = z.numel()
    commit_w, code_w = (1.0, 0.25) if legacy else (0.25, 1.0)
    torch.testing.assert_close(z.grad, 2 * commit_w * diff / n)  # only the commitment term reaches z
    per_vector = -2 * code_w * diff.permute(0, 2, 3, 1).reshape(-1, 3) / n  # codebook term reaches the codes
    torch.testing.assert_close(vq.embedding.weight.grad, per_vector)  # vector a → code 0, b → code 1


def test_quantiser_matches_brute_force_nearest_and_codebook_lookup():
    torch.manual_seed(1)
    vq = VectorQuantizer(n_e=32, e_dim=3, sane_index_shape=True)
    with torch.no_grad():
        vq.embedding.weight.normal_()
    z = torch.randn(2, 3, 5, 4)
    z_q, _, (_, _, indices) = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert indices.shape == (2, 5, 4)
    assert torch.equal(indices.reshape(-1), torch.cdist(flat, vq.embedding.weight).argmin(dim=1))
    torch.testing.assert_close(vq.get_codebook_entry(indices, (2, 5, 4, 3)), z_q)
    assert vq.embedding.weight.abs().max() > 1 / 32  # redrawn; the default init is U(±1/n_e)
    assert VectorQuantizer(n_e=32).embedding.weight.abs().max() <= 1 / 32


# --- VQGAN ---------------------------------------------------------------------------------------------------

def test_vqgan_encode_decode_shapes():
    vq = create_model("glare_vqgan_test").eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        h = vq.encode(x)
        image, emb_loss, (v1, v0) = vq.decode(h)
        recon, loss = vq(x)
    assert h.shape == (2, 3, 8, 12)  # continuous latent, f = 4
    assert image.shape == x.shape and emb_loss.ndim == 0
    assert v1.shape == (2, 64, 16, 24) and v0.shape == (2, 32, 32, 48)
    torch.testing.assert_close(recon, image)
    torch.testing.assert_close(loss, emb_loss)
    # decoding the code indices gives the same image
    _, _, (_, _, indices) = vq.quantize(h)
    with torch.no_grad():
        from_codes, feats = vq.decode_code(indices, (2, 8, 12, 3))
    torch.testing.assert_close(from_codes, image)


def test_semantic_head_is_available_only_with_unused_layers():
    vq = GlareVQGAN(resolution=32, n_embed=16, ch=32, num_res_blocks=1, attn_resolutions=(8,))
    h = torch.randn(1, 3, 4, 4)
    _, base, _ = vq.decode(h)
    _, with_semantic, _ = vq.decode(h, vgg_feat=torch.zeros(1, 256, 4, 4))
    assert with_semantic > base
    with pytest.raises(ValueError, match="unused_layers=True"):
        create_model("glare_vqgan_test").decode(h, vgg_feat=torch.zeros(1, 256, 4, 4))


def test_load_released_vqgan_from_a_user_file(tmp_path):
    source = create_model("glare_vqgan_test")
    path = tmp_path / "vqgan.pkl"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = load_released_vqgan(path, create_model("glare_vqgan_test"))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("decoder.conv_out")}
    torch.save(partial, path)
    with pytest.raises(KeyError, match="missing VQGAN weights"):
        load_released_vqgan(path, create_model("glare_vqgan_test"))
    with pytest.raises(FileNotFoundError):
        load_released_vqgan(tmp_path / "absent.pkl")


# --- Stage-III decoder ---------------------------------------------------------------------------------------

def test_mix_block_initial_values():
    dec = create_model("glare_decoder_test")
    assert [m.w.item() for m in dec.mix] == pytest.approx([-1.0, -0.6])
    assert [torch.sigmoid(m.w).item() for m in dec.mix] == pytest.approx([0.2689, 0.3543], abs=1e-4)
    e, h = torch.full((1, 32, 2, 2), 1.0), torch.zeros(1, 32, 2, 2)
    torch.testing.assert_close(dec.mix[0](e, h), torch.full_like(e, 1 / (1 + math.e)))
    for warp in dec.warp:  # zero-initialised offset/mask predictors (offsets 0, mask 0.5)
        assert warp.dcn.conv_offset.weight.abs().sum() == 0 and warp.dcn.conv_offset.bias.abs().sum() == 0
        assert warp.dcn.deformable_groups == 4 and warp.dcn.conv_offset.out_channels == 108


def test_mean_ratio_fuse():
    h = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)  # mean 2
    v = torch.tensor([0.5, -0.1]).view(1, 2, 1, 1)  # mean 0.2
    torch.testing.assert_close(mean_ratio_fuse(h, v), h + v * 10.0)
    torch.testing.assert_close(mean_ratio_fuse(h, -v, eps=0.05), h - v * (2.0 / -0.25))


def test_decoder_with_vqgan_features_end_to_end():
    vq, dec = create_model("glare_vqgan_test").eval(), create_model("glare_decoder_test", resolution=32,
                                                                      attn_resolutions=(8,))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        h = vq.encode(x)
        _, _, nl_feats = vq.decode(h)
    enc_feats = [torch.randn(1, 32, 32, 32), torch.randn(1, 64, 16, 16)]  # E_c's mid features, finest first
    out = dec(h, nl_feats, enc_feats)
    assert out.shape == (1, 3, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None for p in dec.parameters())


def test_decoder_mix_modes_and_user_beta():
    torch.manual_seed(0)
    base = create_model("glare_decoder_test").eval()
    inputs = base.example_inputs(1)
    outs = {}
    for mode in ("adaptive", "skip", "none"):
        dec = create_model("glare_decoder_test", mix=mode).eval()
        dec.load_state_dict(base.state_dict())
        with torch.no_grad():
            outs[mode] = dec(*inputs)
    assert not torch.allclose(outs["adaptive"], outs["skip"]) and not torch.allclose(outs["adaptive"], outs["none"])
    with pytest.raises(ValueError, match="mix must be one of"):
        MultiScaleDecoder(mix="concat")
    dec = create_model("glare_decoder_test", user_beta=0.0).eval()
    dec.load_state_dict(base.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dec(*inputs), outs["none"])  # β = 0: no LL feature injected


# --- the LDM blocks the VQGAN and the decoder share ----------------------------------------------------------

def test_attention_block_equals_the_explicit_formula():
    from models.layers.vqgan_blocks import AttnBlock

    torch.manual_seed(0)
    block = AttnBlock(32).double()
    x = torch.randn(2, 32, 3, 5, dtype=torch.float64)
    y = block.norm(x)
    q, k, v = (conv(y).flatten(2) for conv in (block.q, block.k, block.v))  # (B, C, N)
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(32), dim=2)  # query i, key j
    expected = x + block.proj_out(torch.einsum("bcj,bij->bci", v, weights).view_as(x))
    torch.testing.assert_close(block(x), expected)


def test_downsample_pads_right_and_bottom_only():
    from models.layers.vqgan_blocks import Downsample

    down = Downsample(32).double()
    x = torch.randn(1, 32, 6, 6, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), down.conv.weight,
                                          down.conv.bias, stride=2)
    torch.testing.assert_close(down(x), expected)
    assert down(x).shape == (1, 32, 3, 3)
