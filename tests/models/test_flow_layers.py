"""Flow layers (models/layers/flow.py): invertibility, log-determinants against autograd Jacobians, ActNorm's
data-dependent initialisation, the zero-initialised coupling, the interleaved shift/scale split, squeeze."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.layers.flow import (
    ActNorm2d,
    ActNormConv2d,
    ConditionalAffineCoupling,
    FeatureAffine,
    FlowStep,
    InvertibleConv1x1,
    SelfConditionalAffine,
    ZeroConv2d,
    affine_from_net,
    squeeze2d,
    unsqueeze2d,
)

C, CC, HID = 3, 4, 8  # latent channels, conditioning channels, coupling width
FRESH_SCALE = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)).item() + 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")



@torch.no_grad()
def randomize(module: nn.Module) -> nn.Module:
    """Every parameter non-zero (the zero-initialised convs too); 1×1 convs orthogonal + noise."""
    for name, p in module.named_parameters():
        if name.endswith("invconv.weight") or isinstance(module, InvertibleConv1x1):
            p.copy_(torch.linalg.qr(torch.randn(p.shape, dtype=p.dtype))[0] + 0.1 * torch.randn_like(p))
        else:
            p.copy_(0.2 * torch.randn_like(p))
    return module


def layers() -> dict[str, tuple[nn.Module, bool]]:
    """name → (randomized layer, takes a conditioning tensor)."""
    return {
        "actnorm": (ActNorm2d(C), False),
        "invconv": (InvertibleConv1x1(C), False),
        "feature_affine": (FeatureAffine(C, CC, HID), True),
        "self_affine": (SelfConditionalAffine(C, CC, HID), True),
        "coupling": (ConditionalAffineCoupling(C, CC, HID), True),
        "step": (FlowStep(C, CC, HID, coupling=True), True),
        "step_no_coupling": (FlowStep(C, CC, HID, coupling=False), False),
    }


def _call(layer, x, cond, logdet=None, inverse=False):
    fn = layer.inverse if inverse else layer
    return fn(x, cond, logdet=logdet) if cond is not None else fn(x, logdet=logdet)


@pytest.mark.parametrize("name", list(layers()))
def test_inverse_undoes_forward_and_its_logdet(name):
    layer, conditional = layers()[name]
    layer = randomize(layer).eval()
    x = torch.randn(2, C, 5, 6)
    cond = torch.randn(2, CC, 5, 6) if conditional else None
    start = torch.tensor([0.5, -1.0])
    with torch.no_grad():
        z, logdet = _call(layer, x, cond, start)
        back, logdet_back = _call(layer, z, cond, logdet, inverse=True)
    assert z.shape == x.shape and logdet.shape == (2,)
    assert (z - x).abs().max() > 1e-2  # a real transformation
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(logdet_back, start, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(layers()))
def test_logdet_equals_the_autograd_jacobian(name):
    layer, conditional = layers()[name]
    layer = randomize(layer).double().eval()
    x = torch.randn(2, C, 2, 3, dtype=torch.float64)
    cond = torch.randn(2, CC, 2, 3, dtype=torch.float64) if conditional else None
    _, logdet = _call(layer, x, cond)
    _, logdet_inv = _call(layer, x, cond, inverse=True)
    for b in range(2):
        c_b = None if cond is None else cond[b:b + 1]
        for inverse, ours in ((False, logdet), (True, logdet_inv)):
            def f(v, c_b=c_b, inverse=inverse):
                return _call(layer, v.view(1, C, 2, 3), c_b, inverse=inverse)[0].flatten()
            jac = torch.autograd.functional.jacobian(f, x[b].flatten())
            sign, value = torch.linalg.slogdet(jac)
            assert sign != 0
            torch.testing.assert_close(ours[b], value, rtol=1e-9, atol=1e-9)


def test_actnorm_data_dependent_initialisation():
    norm = ActNorm2d(C, scale=2.0).train()
    x = torch.randn(4, C, 6, 5) * torch.tensor([0.5, 2.0, 3.0]).view(1, C, 1, 1) + torch.tensor([1.0, -2.0, 0.3]).view(
        1, C, 1, 1)
    y, logdet = norm(x)
    assert norm.inited and (norm.bias != 0).all()
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(C), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.full((C,), 2.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet, torch.full((4,), norm.logs.sum().item() * 30))
    before = norm.bias.detach().clone()
    norm(x * 5 + 1)  # initialised once only
    torch.testing.assert_close(norm.bias.detach(), before)
    assert "inited" not in norm.state_dict()


def test_actnorm_initialisation_is_train_only_and_skipped_after_loading():
    norm = ActNorm2d(C).eval()
    y, _ = norm(torch.randn(2, C, 3, 3) + 4)
    assert not norm.inited and (norm.bias == 0).all()  # eval: identity, init postponed
    loaded = ActNorm2d(C)
    with torch.no_grad():
        loaded.bias.fill_(0.3)
    loaded.train()(torch.randn(2, C, 3, 3) + 4)
    assert loaded.inited and torch.all(loaded.bias == 0.3) and torch.all(loaded.logs == 0)


def test_fresh_couplings_are_the_constant_scale_of_sigmoid_of_2():
    x, cond = torch.randn(2, C, 4, 4), torch.randn(2, CC, 4, 4)
    feature, coupled = FeatureAffine(C, CC, HID), SelfConditionalAffine(C, CC, HID)
    for net in (feature.net, coupled.net):
        last = net[-1]
        assert isinstance(last, ZeroConv2d)
        assert all(torch.all(p == 0) for p in (last.weight, last.bias, last.logs))
        assert last.logs.shape == (last.out_channels, 1, 1)
        assert torch.all(net(torch.randn(2, net[0].in_channels, 4, 4)) == 0)
    z, logdet = feature(x, cond)
    torch.testing.assert_close(z, x * FRESH_SCALE)
    torch.testing.assert_close(logdet, torch.full((2,), C * 16 * math.log(FRESH_SCALE)))
    z, logdet = coupled(x, cond)
    torch.testing.assert_close(z[:, :1], x[:, :1], rtol=0, atol=0)  # z1 = the first C // 2 channels passes
    torch.testing.assert_close(z[:, 1:], x[:, 1:] * FRESH_SCALE)
    torch.testing.assert_close(logdet, torch.full((2,), (C - 1) * 16 * math.log(FRESH_SCALE)))


def test_initialisation_of_convs_and_the_invertible_1x1():
    torch.manual_seed(1)
    conv = ActNormConv2d(64, 64, 3)
    assert conv.bias is None and abs(conv.weight.std().item() - 0.05) < 0.002 and conv.padding == (1, 1)
    w = InvertibleConv1x1(5).weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(5), atol=1e-5, rtol=0)
    _, logdet = InvertibleConv1x1(5)(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(logdet, torch.zeros(2), atol=1e-5, rtol=0)
    zero = ZeroConv2d(8, 6)
    with torch.no_grad():
        zero.bias.fill_(1.0)
        zero.logs.fill_(0.5)
    torch.testing.assert_close(zero(torch.randn(1, 8, 2, 2)), torch.full((1, 6, 2, 2), math.exp(1.5)))


def test_shift_and_scale_are_interleaved_channels():
    h = torch.arange(6.0).view(1, 6, 1, 1)
    shift, scale = affine_from_net(h, eps=1e-4)
    assert shift.flatten().tolist() == [0.0, 2.0, 4.0]
    torch.testing.assert_close(scale.flatten(), torch.sigmoid(torch.tensor([1.0, 3.0, 5.0]) + 2) + 1e-4)


def test_coupling_split_sizes_and_conditioning_widths():
    coupled = SelfConditionalAffine(5, CC, HID)
    assert coupled.split == 2 and coupled.net[0].in_channels == 2 + CC and coupled.net[-1].out_channels == 2 * 3
    assert FeatureAffine(5, CC, HID).net[0].in_channels == CC
    step = FlowStep(3, 64, 64)
    assert sum(p.numel() for p in step.parameters()) == 88_803  # the release's FlowStep (glare/flow_step)
    assert sum(p.numel() for p in FlowStep(3, 64, 64, coupling=False).parameters()) == 15


def test_squeeze_layout_and_inverse():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    s = squeeze2d(x, 2)
    assert s.shape == (1, 4, 2, 2)
    assert s[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # channel c·4 + 2i + j holds offset (i, j)
    y = torch.randn(2, 3, 6, 4)
    assert torch.equal(unsqueeze2d(squeeze2d(y)), y)
    with pytest.raises(ValueError, match="divisible"):
        squeeze2d(torch.randn(1, 1, 3, 4))
