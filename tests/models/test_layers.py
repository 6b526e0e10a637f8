"""Shared layers against independent, loop-written references."""
from __future__ import annotations

import pytest
import timm.layers
import torch

from models.layers import (
    CARAFE,
    CrossShapedWindowAttention,
    CSWinBlock,
    DropPath,
    Mlp,
    build_upsampler,
    drop_path_schedule,
    trunc_normal_,
)


def carafe_reference(module: CARAFE, x: torch.Tensor) -> torch.Tensor:
    """Per output pixel: X'(i', j') = Σ_{n,m} W(i', j')(n, m) · X(i'//σ + n, j'//σ + m), zero outside."""
    s, k = module.scale, module.up_kernel
    r = k // 2
    kernels = module.reassembly_kernels(x)  # (B, k², sH, sW)
    b, c, h, w = x.shape
    out = torch.zeros(b, c, h * s, w * s, dtype=x.dtype)
    for oi in range(h * s):
        for oj in range(w * s):
            i, j = oi // s, oj // s
            for n in range(k * k):
                di, dj = n // k - r, n % k - r
                if 0 <= i + di < h and 0 <= j + dj < w:
                    out[:, :, oi, oj] += kernels[:, n, oi, oj, None] * x[:, :, i + di, j + dj]
    return module.projection(out)


@pytest.mark.parametrize("scale,up_kernel,hw", [(2, 3, (5, 7)), (4, 3, (3, 4)), (2, 5, (6, 4))])
def test_carafe_matches_loop_reference_on_non_square_maps(scale, up_kernel, hw):
    module = CARAFE(8, 6, scale=scale, up_kernel=up_kernel).double()
    x = torch.randn(2, 8, *hw, dtype=torch.float64)
    y = module(x)
    assert y.shape == (2, 6, hw[0] * scale, hw[1] * scale)
    torch.testing.assert_close(y, carafe_reference(module, x))


def test_carafe_kernels_are_normalised():
    module = CARAFE(16, scale=2)
    kernels = module.reassembly_kernels(torch.randn(1, 16, 4, 6))
    torch.testing.assert_close(kernels.sum(1), torch.ones(1, 8, 12))


@pytest.mark.parametrize("name", ["carafe", "bilinear", "transposed"])
@pytest.mark.parametrize("scale", [2, 4])
def test_upsamplers_shapes_and_gradients(name, scale):
    module = build_upsampler(name, 16, 8, scale)
    x = torch.randn(2, 16, 5, 3, requires_grad=True)
    y = module(x)
    assert y.shape == (2, 8, 5 * scale, 3 * scale)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bilinear_upsampler_of_constant_map_is_constant():
    module = build_upsampler("bilinear", 4, 4, 2)
    torch.nn.init.eye_(module.projection.weight.view(4, 4))
    torch.nn.init.zeros_(module.projection.bias)
    x = torch.full((1, 4, 3, 5), 2.5)
    torch.testing.assert_close(module(x), torch.full((1, 4, 6, 10), 2.5))


def test_unknown_upsampler_is_rejected():
    with pytest.raises(ValueError, match="unknown upsampler"):
        build_upsampler("nearest", 4, 4, 2)


def cswin_attention_reference(module: CrossShapedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Explicit loops over stripes and heads, softmax written out."""
    b, h, w, c = x.shape
    q, k, v = module.qkv(x).chunk(3, dim=-1)
    outs = []
    width = c // len(module.branches)
    for bi, branch in enumerate(module.branches):
        sl = slice(bi * width, (bi + 1) * width)
        qb, kb, vb = q[..., sl], k[..., sl], v[..., sl]
        out = torch.zeros_like(qb)
        if branch.orientation == "full":
            windows = [(slice(0, h), slice(0, w))]
        elif branch.orientation == "vertical":
            windows = [(slice(0, h), slice(j, j + branch.split_size)) for j in range(0, w, branch.split_size)]
        else:
            windows = [(slice(i, i + branch.split_size), slice(0, w)) for i in range(0, h, branch.split_size)]
        for rows, cols in windows:
            vw = vb[:, rows, cols]  # (B, wh, ww, cb)
            lepe = branch.lepe(vw.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            for head in range(branch.num_heads):
                hs = slice(head * branch.head_dim, (head + 1) * branch.head_dim)
                qh = qb[:, rows, cols, hs].flatten(1, 2)
                kh = kb[:, rows, cols, hs].flatten(1, 2)
                vh = vw[..., hs].flatten(1, 2)
                scores = qh @ kh.transpose(1, 2) * branch.scale
                weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
                res = (weights @ vh).view(b, vw.shape[1], vw.shape[2], -1) + lepe[..., hs]
                out[:, rows, cols, hs] = res
        outs.append(out)
    return module.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("full", [False, True])
def test_cswin_attention_matches_loop_reference_on_rectangular_map(full):
    module = CrossShapedWindowAttention(dim=16, num_heads=4, split_size=2, full_attention=full).double()
    x = torch.randn(2, 4, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(module(x), cswin_attention_reference(module, x))


def test_stripes_do_not_interact():
    """Changing one vertical stripe changes nothing of the horizontal-free branch elsewhere."""
    module = CrossShapedWindowAttention(dim=8, num_heads=2, split_size=2)
    branch = module.branches[0]  # vertical stripes (H × 2)
    q = k = v = torch.randn(1, 4, 6, 4)
    out = branch(q, k, v)
    v2 = v.clone()
    v2[:, :, 0:2] += 1.0  # first stripe only
    out2 = branch(q, k, v2)
    torch.testing.assert_close(out[:, :, 2:], out2[:, :, 2:])
    assert not torch.allclose(out[:, :, :2], out2[:, :, :2])


def test_stripe_width_must_divide_map():
    block = CSWinBlock(dim=8, num_heads=2, split_size=3)
    with pytest.raises(ValueError, match="must divide the feature map"):
        block(torch.randn(1, 4, 4, 8))


def test_generic_layers_are_timms():
    assert DropPath is timm.layers.DropPath and Mlp is timm.layers.Mlp
    assert trunc_normal_ is timm.layers.trunc_normal_


def test_cswin_block_mlp_keeps_the_official_parameter_names():
    block = CSWinBlock(dim=8, num_heads=2, split_size=2)
    mlp_keys = [k for k in block.state_dict() if k.startswith("mlp.")]
    assert mlp_keys == ["mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    assert isinstance(block.mlp.act, torch.nn.GELU) and block.mlp.act.approximate == "none"
    assert isinstance(block.mlp.norm, torch.nn.Identity)


def test_mlp_is_fc1_gelu_fc2():
    mlp = Mlp(6, 24).double().eval()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    expected = torch.nn.functional.linear(
        torch.nn.functional.gelu(torch.nn.functional.linear(x, mlp.fc1.weight, mlp.fc1.bias)),
        mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), expected)


def test_drop_path_keeps_expectation_and_is_identity_in_eval():
    layer = DropPath(0.5)
    x = torch.ones(20000, 3)
    y = layer.train()(x)
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    assert abs(y.mean().item() - 1.0) < 0.05
    torch.testing.assert_close(layer.eval()(x), x)
    assert torch.equal(DropPath(1.0).train()(x), torch.zeros_like(x))  # no 0/0 at rate 1


def test_drop_path_schedule_is_linear_over_all_blocks():
    rates = drop_path_schedule((1, 2, 9, 1), 0.2)
    flat = [r for stage in rates for r in stage]
    assert [len(r) for r in rates] == [1, 2, 9, 1]
    assert flat[0] == 0.0 and flat[-1] == pytest.approx(0.2)
    torch.testing.assert_close(torch.tensor(flat), torch.linspace(0, 0.2, 13))


def test_sdpa_attention_matches_explicit_softmax_in_float32():
    module = CrossShapedWindowAttention(dim=32, num_heads=4, split_size=7)
    x = torch.randn(1, 14, 14, 32)
    torch.testing.assert_close(module(x), cswin_attention_reference(module, x), rtol=1e-4, atol=1e-5)
