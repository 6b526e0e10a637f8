"""SLAB whole networks: release counts, defaults and switches, tiny forward/backward, merging, conversion."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from models import create_model, model_info
from models.layers.repbn import ProgressiveNorm, RepBN
from models.slab import RELEASE_T, SLABCSWin, convert_official_state_dict, official_key, reparameterize
from models.slab_norm import TokenBatchNorm
from models.slab_reparam import foldable

RELEASE_COUNTS = {
    "deit_t_prepbn": 5_717_441, "deit_s_prepbn": 22_069_889, "slab_deit_t": 6_198_401, "slab_deit_s": 22_992_641,
    "swin_t_prepbn": 28_288_383, "slab_swin_t": 29_216_605, "slab_swin_s": 50_552_965, "slab_cswin_t": 21_227_807,
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _cswin_test(**kwargs) -> SLABCSWin:
    """Tiny SLAB-CSWin at 64²: maps 16-8-4-2, stripes 1-2-2-2 (stage 3 two branches, stage 4 full)."""
    options = dict(img_size=64, embed_dim=8, depths=(1, 1, 2, 1), split_sizes=(1, 2, 2, 2), num_heads=(2, 2, 4, 4),
                   num_classes=10, norm_kwargs=dict(T=10), released_scale=False)
    return SLABCSWin(**{**options, **kwargs})


TINY = {
    "slab_deit_test": (lambda **kw: create_model("slab_deit_test", **kw), (3, 32, 32)),
    "slab_swin_test": (lambda **kw: create_model("slab_swin_test", **kw), (3, 64, 64)),
    "slab_cswin_tiny": (_cswin_test, (3, 64, 64)),
}


@pytest.mark.parametrize("name", sorted(RELEASE_COUNTS))
def test_release_models_have_the_exact_official_parameter_counts(name):
    info = model_info(name)
    assert (info.paper, info.task, info.input_size) == ("slab", "classification", (3, 224, 224))
    model = _meta(name)
    assert _count(model) == RELEASE_COUNTS[name] and model.num_classes == 1000
    assert _count(_meta(name, num_classes=10)) == RELEASE_COUNTS[name] - 990 * (model.num_features + 1)


def test_released_norm_kinds_and_T():
    for name in ("deit_t_prepbn", "swin_t_prepbn"):  # inference-time definitions: plain RepBN
        modules = list(_meta(name).modules())
        assert not any(isinstance(m, ProgressiveNorm | nn.LayerNorm) for m in modules)
        assert sum(isinstance(m, RepBN) for m in modules) == (25 if "deit" in name else 29)
    for name in ("slab_deit_t", "deit_s_prepbn", "slab_swin_t", "slab_cswin_t"):
        norms = [m for m in create_model(name).modules() if isinstance(m, ProgressiveNorm)]
        assert norms and {m.T for m in norms} == {RELEASE_T[name]}
        assert {m.counting for m in norms} == {"global_step"} and {m.schedule for m in norms} == {"linear"}
        eps = 1e-6 if "deit" in name else 1e-5
        assert {m.ln.eps for m in norms} == {eps}
    assert RELEASE_T["slab_deit_t"] == RELEASE_T["slab_swin_t"] == 60_000 and RELEASE_T["slab_cswin_t"] == 120_000


def test_progressive_flag_gives_the_training_form():
    model = _meta("deit_t_prepbn", progressive=True, schedule="cosine", counting="per_forward")
    norms = [m for m in model.modules() if isinstance(m, ProgressiveNorm)]
    assert len(norms) == 25 and {(m.schedule, m.counting) for m in norms} == {("cosine", "per_forward")}
    assert _count(model) == RELEASE_COUNTS["deit_t_prepbn"] + 25 * 2 * 192  # + one LayerNorm per norm
    swin = _meta("swin_t_prepbn", progressive=True)
    assert sum(isinstance(m, ProgressiveNorm) for m in swin.modules()) == 29
    assert _count(_meta("swin_t_prepbn", progressive=False)) == RELEASE_COUNTS["swin_t_prepbn"]
    with pytest.raises(ValueError, match="contradicts"):
        create_model("deit_t_prepbn", progressive=True, norm="ln")
    tiny = create_model("slab_deit_test", T=3, counting="per_forward").train()
    first = next(m for m in tiny.modules() if isinstance(m, ProgressiveNorm))
    gammas = []
    for _ in range(4):
        tiny(torch.randn(2, 3, 32, 32))
        gammas.append(float(first.last_gamma))
    assert gammas == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


@pytest.mark.parametrize("norm", ["ln", "bn", "repbn", "prepbn"])
@pytest.mark.parametrize("attention", ["sla", "softmax"])
def test_ablation_variants_build_by_constructor_arguments(norm, attention):
    expected = {"ln": nn.LayerNorm, "bn": TokenBatchNorm, "repbn": RepBN, "prepbn": ProgressiveNorm}[norm]
    for name, (build, size) in TINY.items():
        model = build(norm=norm, attention=attention)
        assert isinstance(model.norm, expected) and isinstance(model.head if name == "slab_cswin_tiny" else
                                                               model.head.fc if "swin" in name else model.head,
                                                               nn.Linear), name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert model.train()(torch.randn(2, *size)).shape == (2, 10)


def test_attention_patterns():
    swin = create_model("slab_swin_test")
    kinds = [type(stage.blocks[0].attn).__name__ for stage in swin.layers]
    assert kinds == ["SimplifiedLinearAttention"] * 2 + ["WindowAttention"] * 2
    assert swin.layers[0].blocks[0].attn.positional_encoding.shape == (1, 16 * 16, 8)  # global window
    assert swin.layers[2].blocks[1].shift_size == (1, 1)  # softmax stages keep the shifted windows
    full = _meta("slab_swin_t")
    assert [b.window_size for b in (full.layers[0].blocks[1], full.layers[1].blocks[1], full.layers[2].blocks[1])] == \
        [(56, 56), (28, 28), (7, 7)]
    assert all(not any(b.shift_size) for s in full.layers[:2] for b in s.blocks)
    cswin = _cswin_test()
    assert [type(s[0].attn).__name__ for s in cswin.stages] == \
        ["CSWinLinearAttention"] * 2 + ["CrossShapedWindowAttention"] * 2
    assert [len(s[0].attn.branches) for s in cswin.stages] == [1, 1, 2, 1]
    with pytest.raises(ValueError, match="attention"):
        create_model("slab_swin_test", attention="LLS")


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_backward_every_parameter_gets_a_gradient(name):
    build, size = TINY[name]
    model = build(counting="per_forward") if name != "slab_cswin_tiny" else build(
        norm_kwargs=dict(T=10, counting="per_forward"))
    out = model.train()(torch.randn(2, *size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_release_unused_parameters_are_kept_and_unused():
    deit = create_model("slab_deit_test", released_cls_token=True)
    assert deit.released_cls_token.shape == (1, 1, 16) and deit.cls_token is None
    deit(torch.randn(2, 3, 32, 32)).mean().backward()
    assert deit.released_cls_token.grad is None
    assert official_key(deit, "released_cls_token") == "cls_token"
    cswin = _cswin_test(released_scale=True)
    cswin(torch.randn(2, 3, 64, 64)).mean().backward()
    scales = [b.attn.branches[0].scale for s in cswin.stages[:2] for b in s]
    assert all(s is not None and s.grad is None for s in scales)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter (α ≠ 1, P ≠ 0, conv biases ≠ 0) so every fold matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, RepBN):
                m.alpha.fill_(0.5 + torch.rand((), generator=g).item())
    return model


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("norm", ["prepbn", "repbn", "bn"])
def test_merged_model_equals_the_unfused_one_in_eval(name, norm):
    build, size = TINY[name]
    kwargs = dict(norm_kwargs=dict(T=4, counting="per_forward")) if name == "slab_cswin_tiny" else dict(
        T=4, counting="per_forward")
    torch.manual_seed(0)
    model = _randomise(build(norm=norm, **kwargs)).train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial BN statistics (and γ moving for PRepBN)
            model(torch.randn(4, *size))
    model.eval()
    x = torch.randn(3, *size)
    with torch.no_grad():
        expected = model(x)
        merged = reparameterize(model)
        assert not any(foldable(m) for m in merged.modules())
        assert not any(isinstance(m, nn.LayerNorm) for m in merged.modules())
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.merge()(x), expected, rtol=1e-5, atol=1e-5)
        if name != "slab_deit_test" and norm != "bn":  # normed patch embedding / stem with a bias: the release's bug
            assert expected.abs().max() > 0.1
            assert (reparameterize(model, release_formula=True)(x) - expected).abs().max() > 1e-3
    assert any(foldable(m) for m in model.modules())  # the original is untouched


def test_layernorm_models_keep_their_norms_when_merged():
    model = create_model("slab_deit_test", norm="ln").eval()
    x = torch.randn(2, 3, 32, 32)
    merged = reparameterize(model)
    assert sum(isinstance(m, nn.LayerNorm) for m in merged.modules()) == 5
    torch.testing.assert_close(merged(x), model(x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_official_names_round_trip(name):
    build, _ = TINY[name]
    model = build()
    state = model.state_dict()
    official = {official_key(model, k): v for k, v in state.items()}
    assert len(official) == len(state)
    assert not any(".ln." in k or ".repbn." in k or "steps_left" in k for k in official)
    back = convert_official_state_dict({"model": {"module." + k: v for k, v in official.items()}}, model)
    assert back.keys() == state.keys()
    model.load_state_dict(back, strict=True)
    with pytest.raises(KeyError, match="without a counterpart"):
        convert_official_state_dict({**official, "nonsense.weight": torch.zeros(1)}, model)


def test_swin_names_follow_the_release_layout():
    model = create_model("slab_swin_test")
    keys = {official_key(model, k) for k in model.state_dict()}
    assert "layers.0.downsample.reduction.weight" in keys and "layers.3.downsample.reduction.weight" not in keys
    assert {"head.weight", "norm.norm2.alpha", "norm.iter", "patch_embed.norm.norm1.weight"} <= keys
    converted = convert_official_state_dict(
        {official_key(model, k): v for k, v in model.state_dict().items()}
        | {"layers.2.blocks.1.attn_mask": torch.zeros(1), "layers.2.blocks.0.attn.relative_position_index": 0},
        model)
    assert "layers.2.blocks.1.attn_mask" not in converted


def test_norms_take_channels_last_maps_like_their_tokens():
    """timm's Swin normalises (B, H, W, C) maps: RepBN / PRepBN / BN on a map = on its H·W tokens."""
    from models.slab_norm import make_slab_norm

    x = torch.randn(2, 3, 5, 6)
    for kind in ("bn", "repbn", "prepbn"):
        norm = make_slab_norm(6, kind, T=4, counting="per_forward")
        tokens = make_slab_norm(6, kind, T=4, counting="per_forward")
        tokens.load_state_dict(norm.state_dict())
        torch.testing.assert_close(norm.train()(x), tokens.train()(x.reshape(2, 15, 6)).reshape(x.shape))
        torch.testing.assert_close(norm.eval()(x), tokens.eval()(x.reshape(2, 15, 6)).reshape(x.shape))
    with pytest.raises(ValueError, match="norm must be"):
        make_slab_norm(6, "rms")


def test_every_trainable_parameter_gets_a_gradient_ddp_safe():
    """DDP (without find_unused_parameters) stops on a trainable parameter that gets no gradient: the
    release's unused cls_token must be frozen, and still counted."""
    from models.slab_deit import SLABVisionTransformer

    net = SLABVisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3,
                                norm="prepbn", attention="sla", pool="avg", released_cls_token=True,
                                norm_kwargs={"T": 10})
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not net.released_cls_token.requires_grad
    assert "released_cls_token" in dict(net.named_parameters())
