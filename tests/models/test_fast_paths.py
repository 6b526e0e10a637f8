"""The training-step fast paths against the previous implementation, forward and backward.

The references below are the straightforward formulations this code base used before the
speed-ups (CARAFE via ``F.unfold`` + matmul + pixel shuffle + NCHW projection; each stripe
branch through :class:`StripeAttention` with window copies and a ``cat``; ``x + DropPath(y)``;
the head applied after the full-resolution upsample). They share the modules' parameters, so
outputs and every gradient must agree (float64: to rounding).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import create_model
from models.layers import CARAFE, CrossShapedWindowAttention, CSWinBlock, cswin_attention
from models.layers.carafe import _Neighbourhoods
from models.layers.cswin_attention import _residual, _StripeGather, _StripeMerge, _window_attention
from models.layers.explicit_attention import explicit_attention


# --------------------------------------------------------------------------- references
def reference_carafe(module: CARAFE, x: torch.Tensor) -> torch.Tensor:
    """The previous CARAFE forward: (B, C, H, W) → (B, C_out, σH, σW)."""
    b, c, h, w = x.shape
    s, k2 = module.scale, module.up_kernel**2
    kernels = module.reassembly_kernels(x)
    kernels = kernels.view(b, k2, h, s, w, s).permute(0, 2, 4, 3, 5, 1).reshape(b, h, w, s * s, k2)
    patches = F.unfold(x, module.up_kernel, padding=module.up_kernel // 2)
    patches = patches.view(b, c, k2, h, w).permute(0, 3, 4, 2, 1)
    out = torch.matmul(kernels, patches)
    out = out.view(b, h, w, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * s, w * s)
    return module.projection(out)


def reference_attention(module: CrossShapedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """The previous forward: every branch through StripeAttention (window copies), then cat + proj."""
    q, k, v = module.qkv(x).chunk(3, dim=-1)
    width = module.dim // len(module.branches)
    outs = [branch(*(t[..., i * width : (i + 1) * width] for t in (q, k, v)))
            for i, branch in enumerate(module.branches)]
    return module.proj_drop(module.proj(torch.cat(outs, dim=-1)))


def reference_block(block: CSWinBlock, x: torch.Tensor) -> torch.Tensor:
    x = x + block.drop_path(reference_attention(block.attn, block.norm1(x)))
    return x + block.drop_path(block.mlp(block.norm2(x)))


def reference_upsample(upsampler: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) → (B, σH, σW, C_out), as the previous ChannelsLastUpsample."""
    x = x.permute(0, 3, 1, 2)
    y = reference_carafe(upsampler, x) if isinstance(upsampler, CARAFE) else upsampler(x)
    return y.permute(0, 2, 3, 1)


def reference_model(model, x: torch.Tensor) -> torch.Tensor:
    """The previous CSWinUNet.forward, on the same modules."""
    if x.shape[1] == 1 and model.in_chans != 1:
        x = x.repeat(1, model.in_chans, 1, 1)
    x = model.stem(x)
    skips = []
    for s, stage in enumerate(model.encoder):
        for block in stage:
            x = reference_block(block, x)
        if s < len(model.encoder) - 1:
            skips.append(x)
            x = model.downsample[s](x)
    x = model.encoder_norm(x)
    for block in model.bottleneck:
        x = reference_block(block, x)
    for level, skip in zip(model.decoder, reversed(skips), strict=True):
        x = reference_upsample(level.upsample.upsampler, x)
        if level.skip_fusion is not None:
            x = level.skip_fusion(torch.cat([skip, x], dim=-1))
        for block in level.blocks:
            x = reference_block(block, x)
    x = reference_upsample(model.final_upsample.upsampler, model.decoder_norm(x))
    return model.head(x.permute(0, 3, 1, 2))


def outputs_and_grads(fn, module: torch.nn.Module, x: torch.Tensor, seed: int = 0):
    """fn(x) and the gradients of a fixed random projection of it w.r.t. x and every parameter."""
    x = x.detach().requires_grad_(True)
    torch.manual_seed(seed)  # the same DropPath masks for both implementations
    y = fn(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad((y * weights).sum(), [x, *params], allow_unused=True)
    return y, grads


def assert_same(fast, ref, **tol):
    (y1, g1), (y2, g2) = fast, ref
    torch.testing.assert_close(y1, y2, **tol)
    assert len(g1) == len(g2)
    for i, (a, b) in enumerate(zip(g1, g2, strict=True)):
        if a is None or b is None:
            assert a is None and b is None, f"gradient {i}: one side is None"
        else:
            torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"gradient {i}: {m}")


# --------------------------------------------------------------------------- CARAFE
@pytest.mark.parametrize("scale,up_kernel,hw,channels_last", [
    (2, 3, (5, 7), False), (2, 3, (6, 6), True), (4, 3, (3, 4), True), (2, 5, (6, 4), False), (4, 5, (4, 4), True),
])
def test_carafe_matches_the_previous_implementation_forward_and_backward(scale, up_kernel, hw, channels_last):
    module = CARAFE(8, 6, scale=scale, up_kernel=up_kernel).double()
    x = torch.randn(2, *hw, 8, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last, as the model feeds it
    if not channels_last:
        x = x.contiguous()
    assert_same(outputs_and_grads(module, module, x),
                outputs_and_grads(lambda t: reference_carafe(module, t), module, x))


def test_carafe_subpixel_layout_is_the_output_before_interleaving():
    module = CARAFE(8, 4, scale=2).double()
    x = torch.randn(1, 8, 3, 5, dtype=torch.float64)
    sub = module.subpixel_forward(x)  # (B, H, W, σ, σ, C_out)
    assert sub.shape == (1, 3, 5, 2, 2, 4)
    full = module(x)
    torch.testing.assert_close(sub[0, 1, 2, 1, 0], full[0, :, 2 * 1 + 1, 2 * 2 + 0])


class _CarafeThenHead(torch.nn.Module):
    """CARAFE's sub-pixel output, optionally through a bias-free 1×1 head (CSWin-UNet's final upsample)."""

    def __init__(self, carafe: CARAFE, head: torch.nn.Conv2d | None):
        super().__init__()
        self.carafe, self.head = carafe, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.carafe.subpixel_forward(x, head=self.head)


@pytest.mark.parametrize("with_head", [False, True])
def test_carafe_projecting_first_equals_the_release_order_and_counts_its_macs(with_head):
    """Reassembly weights sum to 1 and zero padding stays zero: projection (and head) commute with it."""
    from lightning_modules.complexity import macs_all, macs_conv_linear

    torch.manual_seed(0)
    carafe = CARAFE(8, 6, scale=4).double()
    torch.nn.init.normal_(carafe.projection.bias)  # a bias that matters at the zero-padded border
    model = _CarafeThenHead(carafe, torch.nn.Conv2d(6, 3, 1, bias=False).double() if with_head else None)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    fast = outputs_and_grads(model, model, x)
    carafe.fast_path = False
    assert_same(fast, outputs_and_grads(model, model, x))
    release_macs = (macs_conv_linear(model, x), macs_all(model, x))
    carafe.fast_path = True
    assert (macs_conv_linear(model, x), macs_all(model, x)) == release_macs  # the architecture's MACs
    assert carafe.fast_path  # restored after counting
    with pytest.raises(ValueError, match="without bias"):
        carafe.subpixel_forward(x, head=torch.nn.Conv2d(6, 3, 1).double())


def test_neighbourhoods_gradcheck():
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _Neighbourhoods.apply(t, 3), (x,))
    patches = _Neighbourhoods.apply(x, 3).view(1, 4, 5, 3, 3, 3)
    torch.testing.assert_close(patches[0, 0, 0, 1, 1], x[0, :, 0, 0])  # centre tap
    assert torch.equal(patches[0, 0, 0, 0, 0], torch.zeros(3, dtype=torch.float64))  # zero padding


# --------------------------------------------------------------------------- attention and block
@pytest.mark.parametrize("dim,heads,split,hw,full", [
    (16, 4, 1, (6, 6), False), (16, 4, 2, (8, 8), False), (32, 8, 7, (14, 14), False),
    (16, 4, 2, (4, 6), False),  # non-square: per-branch fallback
    (16, 4, 7, (7, 7), True), (16, 2, 2, (4, 6), True),
])
def test_attention_matches_the_previous_implementation_forward_and_backward(dim, heads, split, hw, full):
    module = CrossShapedWindowAttention(dim, heads, split, full_attention=full).double()
    x = torch.randn(2, *hw, dim, dtype=torch.float64)
    assert_same(outputs_and_grads(module, module, x), outputs_and_grads(lambda t: reference_attention(module, t),
                                                                        module, x))


def test_explicit_attention_gradcheck_and_equals_the_fused_kernel():
    q, k, v = (torch.randn(3, 2, 7, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: explicit_attention(a, b, c, 0.3), (q, k, v))
    fused = [F.scaled_dot_product_attention(q, k, v, scale=0.3)]
    fused += torch.autograd.grad(fused[0].pow(2).sum(), (q, k, v))
    ours = [explicit_attention(q, k, v, 0.3)]
    ours += torch.autograd.grad(ours[0].pow(2).sum(), (q, k, v))
    for a, b in zip(ours, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_cpu_window_attention_skips_the_fused_kernel_and_bf16_stays_close_to_float32(monkeypatch):
    q, k, v = (torch.randn(6, 2, 14, 16) for _ in range(3))
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(cswin_attention.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[0].dtype) or real(*a, **kw))

    def run(dtype, dropout_p=0.0):
        inputs = [t.to(dtype).detach().clone().requires_grad_(True) for t in (q, k, v)]
        out = _window_attention(*inputs, 0.25, dropout_p)
        out.float().pow(2).sum().backward()
        return out.float(), [t.grad.float() for t in inputs]

    ref, ref_grads = run(torch.float32)
    low, low_grads = run(torch.bfloat16)
    assert calls == []  # without dropout the CPU never takes the fused kernel
    torch.testing.assert_close(low, ref, rtol=0.03, atol=0.03)
    for a, b in zip(low_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
    run(torch.float32, dropout_p=0.1)
    assert calls == [torch.float32]  # attention dropout: the fused kernel draws the mask


def test_stripe_gather_and_merge_gradcheck():
    b, h, split, cb = 1, 4, 2, 2
    qkv = torch.randn(b, h, h, 6 * cb, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _StripeGather.apply(t, split), (qkv,))
    # only q used: the unused outputs come back as zero gradients
    assert torch.autograd.gradcheck(lambda t: _StripeGather.apply(t, split)[0], (qkv,))
    n_win, n = h // split, h * split
    attn = torch.randn(2, b, n_win, n, cb, dtype=torch.float64, requires_grad=True)
    lepe_v = torch.randn(b * n_win, h, split, cb, dtype=torch.float64, requires_grad=True)
    lepe_h = torch.randn(b * n_win, split, h, cb, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v, w: _StripeMerge.apply(a, v, w, h, h, split),
                                    (attn, lepe_v, lepe_h))


def test_residual_draws_the_same_drop_path_masks_as_timm():
    block = CSWinBlock(dim=8, num_heads=2, split_size=2, drop_path=0.5).train()
    x, y = torch.randn(6, 2, 2, 8), torch.randn(6, 2, 2, 8)
    torch.manual_seed(3)
    ours = _residual(x, y, block.drop_path)
    torch.manual_seed(3)
    theirs = x + block.drop_path(y)
    torch.testing.assert_close(ours, theirs)
    assert not torch.equal(ours, x + y)  # some samples dropped at rate 0.5 with 6 samples (seed 3)
    torch.testing.assert_close(_residual(x, y, block.drop_path.eval()), x + y)


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_block_matches_the_previous_implementation_in_train_mode(drop_path):
    block = CSWinBlock(dim=16, num_heads=4, split_size=2, drop_path=drop_path).double().train()
    x = torch.randn(4, 6, 6, 16, dtype=torch.float64)
    assert_same(outputs_and_grads(block, block, x, seed=5),
                outputs_and_grads(lambda t: reference_block(block, t), block, x, seed=5))


# --------------------------------------------------------------------------- whole model
@pytest.mark.parametrize("upsampler", ["carafe", "bilinear", "transposed"])
def test_model_matches_the_previous_implementation_forward_and_backward(upsampler):
    model = create_model("cswin_unet_test", upsampler=upsampler, drop_path_rate=0.2).double().train()
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    fast = outputs_and_grads(model, model, x, seed=7)
    assert fast[0].is_contiguous()
    assert_same(fast, outputs_and_grads(lambda t: reference_model(model, t), model, x, seed=7))


def test_model_in_float32_eval_matches_the_previous_implementation():
    model = create_model("cswin_unet_test").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_model(model, x), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_stays_close_to_float32_and_keeps_lepe_in_float32():
    model = create_model("cswin_unet_test").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    attn = CrossShapedWindowAttention(16, 4, 2)
    seen = []
    handle = attn.branches[0].lepe.register_forward_hook(lambda m, i, o: seen.append(i[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(torch.randn(1, 4, 4, 16))
    handle.remove()
    assert seen == [torch.float32] and y.dtype == torch.bfloat16


def test_model_traces_as_one_graph_for_torch_compile():
    """The custom autograd Functions and the strided ``out=`` fast path must not break Dynamo's graph."""
    model = create_model("cswin_unet_test").train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 1, 64, 64))
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]


def test_explicit_attention_in_bf16_casts_nothing_forward_or_backward():
    """bf16 inputs stay bf16 through the products, the softmax and its backward (no ``_to_copy``)."""
    from torch.profiler import ProfilerActivity, profile

    q, k, v = (torch.randn(4, 2, 49, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = explicit_attention(q, k, v, 0.25)
        out.sum().backward()
    assert out.dtype == torch.bfloat16 and q.grad.dtype == torch.bfloat16
    assert "aten::_to_copy" not in {event.name for event in prof.events()}
