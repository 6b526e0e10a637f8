"""ModulatedDeformConv2d (torchvision's DCNv2 kernel) against a naive bilinear-sampling reference."""
from __future__ import annotations

import pytest
import torch

from models.layers.deformable import ModulatedDeformConv2d, split_offset_mask


def _bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sample ``img: (C, H, W)`` at real positions ``y, x: (P,)`` → ``(C, P)``, corners outside count 0."""
    _, h, w = img.shape
    y0, x0 = torch.floor(y), torch.floor(x)
    out = torch.zeros(img.shape[0], y.numel(), dtype=img.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - (y - yy).abs()) * (1 - (x - xx).abs())
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = img[:, yy.clamp(0, h - 1).long(), xx.clamp(0, w - 1).long()]
            out += vals * (weight * inside)
    return out


def _naive_dcnv2(x, offset, mask, weight, bias, stride, padding, dilation, groups):
    """Direct sum over kernel taps; offset channel (g, k, 0/1) = 2·(g·K + k) + (dy, dx)."""
    b, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    n_def = offset.shape[1] // (2 * kh * kw)
    oy, ox = torch.meshgrid(torch.arange(ho, dtype=x.dtype), torch.arange(wo, dtype=x.dtype), indexing="ij")
    out = torch.zeros(b, c_out, ho, wo, dtype=x.dtype)
    for n in range(b):
        cols = torch.zeros(c_in, kh * kw, ho * wo, dtype=x.dtype)  # modulated samples per input channel and tap
        for c in range(c_in):
            g = c // (c_in // n_def)
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    dy = offset[n, 2 * (g * kh * kw + k)]
                    dx = offset[n, 2 * (g * kh * kw + k) + 1]
                    py = oy * stride - padding + i * dilation + dy
                    px = ox * stride - padding + j * dilation + dx
                    sampled = _bilinear(x[n, c:c + 1], py.reshape(-1), px.reshape(-1))[0]
                    cols[c, k] = sampled * mask[n, g * kh * kw + k].reshape(-1)
        for o in range(c_out):
            grp = o // (c_out // groups)
            chans = slice(grp * c_per_group, (grp + 1) * c_per_group)
            acc = torch.einsum("ckp,ck->p", cols[chans], weight[o].reshape(c_per_group, kh * kw))
            out[n, o] = acc.reshape(ho, wo) + (bias[o] if bias is not None else 0)
    return out


@pytest.mark.parametrize("stride,padding,dilation,groups,deformable_groups", [
    (1, 1, 1, 1, 4),  # GLARE's configuration (3×3, padding 1, deformable groups 4)
    (2, 1, 1, 2, 2),
    (1, 2, 2, 1, 1),
])
def test_matches_naive_reference(stride, padding, dilation, groups, deformable_groups):
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(8, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                  deformable_groups=deformable_groups, offset_in_channels=5).double()
    with torch.no_grad():  # random offsets (several pixels, some out of the image) and masks
        layer.conv_offset.weight.normal_(0, 0.6)
        layer.conv_offset.bias.normal_(0, 1.0)
        layer.bias.normal_()
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    feat = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    ours = layer(x, feat)
    out = layer.conv_offset(feat)
    o1, o2, third = out.chunk(3, dim=1)
    offset, mask = torch.cat([o1, o2], 1), torch.sigmoid(third)
    assert offset.abs().max() > 1.5 and (mask - 0.5).abs().max() > 0.2  # the case is really deformed
    ref = _naive_dcnv2(x, offset, mask, layer.weight, layer.bias, stride, padding, dilation, groups)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)


def test_chunk_order_is_o1_o2_mask():
    out = torch.arange(3 * 4 * 9, dtype=torch.float32).view(1, 108, 1, 1)
    offset, mask = split_offset_mask(out)
    assert offset.shape[1] == 72 and mask.shape[1] == 36
    torch.testing.assert_close(offset.flatten(), torch.arange(72.0))
    torch.testing.assert_close(mask.flatten(), torch.sigmoid(torch.arange(72.0, 108.0)))


def test_initialisation_and_identity_at_init():
    layer = ModulatedDeformConv2d(16, 16, 3, padding=1, deformable_groups=4)
    assert layer.conv_offset.out_channels == 108
    assert layer.conv_offset.weight.abs().sum() == 0 and layer.conv_offset.bias.abs().sum() == 0
    assert layer.bias.abs().sum() == 0
    bound = 1 / (16 * 9) ** 0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    # zero offsets and mask 0.5: half a plain convolution
    x = torch.randn(1, 16, 5, 5)
    torch.testing.assert_close(layer(x), 0.5 * torch.nn.functional.conv2d(x, layer.weight, layer.bias, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_gradients_reach_offsets_mask_and_weight():
    layer = ModulatedDeformConv2d(4, 4, 3, padding=1, deformable_groups=2)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    layer(x).pow(2).sum().backward()
    for p in (layer.weight, layer.bias, layer.conv_offset.weight, layer.conv_offset.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


@pytest.mark.gpu
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(16, 16, 3, padding=1, deformable_groups=4)
    with torch.no_grad():
        layer.conv_offset.weight.normal_(0, 0.3)
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    layer(x).square().sum().backward()
    cpu_grad = layer.conv_offset.weight.grad.clone()
    gpu_layer = ModulatedDeformConv2d(16, 16, 3, padding=1, deformable_groups=4).cuda()
    gpu_layer.load_state_dict(layer.state_dict())
    x_gpu = x.detach().cuda().requires_grad_(True)
    out = gpu_layer(x_gpu)
    out.square().sum().backward()
    torch.testing.assert_close(out.cpu(), layer(x).detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu_layer.conv_offset.weight.grad.cpu(), cpu_grad, rtol=1e-3, atol=1e-3)


def test_unmodulated_depthwise_form_matches_naive_reference():
    """DCNv1 (no mask), depthwise, predictor with PyTorch's default init (the D-LKA form)."""
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(6, 6, 3, padding=3, dilation=3, groups=6, bias=False, modulated=False,
                                  zero_init_offset=False).double()
    assert layer.conv_offset.out_channels == 18 and layer.conv_offset.weight.abs().sum() > 0
    with torch.no_grad():
        layer.conv_offset.weight.mul_(8.0)  # offsets of a few pixels
    x = torch.randn(1, 6, 7, 7, dtype=torch.float64)
    offset = layer.conv_offset(x)
    assert offset.abs().max() > 1.0
    ref = _naive_dcnv2(x, offset, torch.ones(1, 9, 7, 7, dtype=torch.float64), layer.weight, None, 1, 3, 3, 6)
    torch.testing.assert_close(layer(x), ref, rtol=1e-9, atol=1e-10)


def test_non_finite_offsets_raise_instead_of_crashing_the_cpu_kernel():
    layer = ModulatedDeformConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        layer.conv_offset.bias[0] = float("nan")  # what a diverged step leaves in the weights
    with pytest.raises(FloatingPointError, match="non-finite offsets"):
        layer(x)
