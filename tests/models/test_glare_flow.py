"""GLARE Stage II (models/glare_flow.py): exact counts, structure, conversion, NLL, heat-0 inference."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import create_model, model_info
from models.glare_flow import (
    ConditionalEncoder,
    GlareStage2,
    LatentFlow,
    convert_official_state_dict,
    log_low,
    official_key,
)
from models.layers.flow import FlowStep

STAGE2, COND_ENCODER, FLOW, UNUSED_HEAD = 27_680_219, 24_442_583, 3_237_636, 1_106_304


pytestmark = pytest.mark.usefixtures("one_thread")



def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def _randomize_flow(flow: nn.Module, std: float = 0.1) -> None:
    """Non-zero couplings and ActNorms (a trained-looking flow); 1×1 convs orthogonal + noise."""
    for name, p in flow.named_parameters():
        if name.endswith("invconv.weight"):
            p.copy_(torch.linalg.qr(torch.randn(p.shape))[0] + 0.05 * torch.randn_like(p))
        else:
            p.copy_(std * torch.randn_like(p))


def tiny(**kwargs) -> GlareStage2:
    return create_model("glare_stage2_test", **kwargs)


def test_released_parameter_counts():
    with torch.device("meta"):
        model = create_model("glare_stage2")
        lean = create_model("glare_stage2", keep_unused_head=False)
    assert _count(model) == STAGE2 == COND_ENCODER + FLOW
    assert _count(model.cond_encoder) == COND_ENCODER and _count(model.flow) == FLOW
    assert _count(model.flow.unused_head) == UNUSED_HEAD
    assert _count(lean) == STAGE2 - UNUSED_HEAD and lean.flow.unused_head is None
    kinds = [step.coupling is not None for step in model.flow.steps]
    assert kinds == 2 * ([False] * 2 + [True] * 12)  # L = 2 × (2 additional + K = 12)
    assert model.train_gt_ratio == 0.2 and model.log_low and model.downscale == 4
    info = model_info("glare_stage2")
    # LOL 600×400, padded as at evaluation
    assert (info.paper, info.task, info.input_size) == ("glare", "enhancement", (3, 420, 620))


def test_official_names_and_conversion_round_trip():
    model = tiny(keep_unused_head=True)
    ours = model.state_dict()
    official = {official_key(model, k): v for k, v in ours.items()}
    assert {"RRDB.encoder.conv_in.weight", "RRDB.cond_conv.0.weight", "RRDB.color_conv.bias",
            "flowUpsamplerNet.layers.0.invconv.weight", "flowUpsamplerNet.layers.1.affine.fFeatures.4.logs",
            "flowUpsamplerNet.layers.2.affine.fAffine.0.actnorm.bias", "flowUpsamplerNet.f.0.weight"} <= set(official)
    back = convert_official_state_dict({"module." + k: v for k, v in official.items()}, model)
    assert back.keys() == ours.keys() and all(back[k] is ours[k] for k in ours)
    lean = tiny()  # built without the unused head: the release's f.0 is dropped, nothing else is
    lean.load_state_dict(convert_official_state_dict(official, lean), strict=True)
    with pytest.raises(KeyError, match="without a counterpart"):
        convert_official_state_dict({**official, "decoder.conv_in.weight": torch.zeros(1)}, model)
    assert convert_official_state_dict({**official, "decoder.conv_in.weight": torch.zeros(1)}, model,
                                       strict=False).keys() == ours.keys()


def test_conditional_encoder_outputs():
    model = tiny().eval()
    low = torch.rand(2, 3, 32, 32)
    cond = model.condition(low)
    assert cond.cond_feat.shape == (2, 16, 8, 8) and cond.color_map.shape == (2, 3, 8, 8)
    assert [f.shape for f in cond.mid_feats] == [(2, 32, 32, 32), (2, 32, 16, 16)]
    assert cond.cond_feat.min() >= 0 and cond.cond_feat.max() <= 1  # sigmoid head
    direct = model.cond_encoder(log_low(low))
    torch.testing.assert_close(direct.color_map, cond.color_map)
    raw = tiny(log_low=False).eval()
    raw.load_state_dict(model.state_dict())
    torch.testing.assert_close(raw.condition(low).color_map, model.cond_encoder(low).color_map)
    assert isinstance(model.cond_encoder, ConditionalEncoder)


def test_log_low_transform():
    x = torch.tensor([0.0, -0.5, 1.0])
    torch.testing.assert_close(log_low(x), torch.log(torch.tensor([1e-3, 1e-3, 1.001])))


def test_whole_flow_is_invertible_and_its_logdet_is_the_jacobian():
    flow = LatentFlow(3, 4, 8, K=2, L=2, n_additional=1, keep_unused_head=False).double().eval()
    _randomize_flow(flow)
    assert len(flow.steps) == 6 and all(isinstance(s, FlowStep) for s in flow.steps)
    y, cond = torch.randn(1, 3, 2, 2, dtype=torch.float64), torch.randn(1, 4, 2, 2, dtype=torch.float64)
    z, logdet = flow(y, cond)
    back, logdet_back = flow.inverse(z, cond, logdet)
    torch.testing.assert_close(back, y, rtol=0, atol=1e-10)
    torch.testing.assert_close(logdet_back, torch.zeros(1, dtype=torch.float64), rtol=0, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 3, 2, 2), cond)[0].flatten(), y.flatten())
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1])


def test_nll_is_bits_per_latent_pixel_of_the_conditional_gaussian():
    model = tiny().double().eval()
    _randomize_flow(model.flow)
    low = torch.rand(1, 3, 8, 8, dtype=torch.float64)  # latent 2 × 2
    y = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    cond = model.condition(low)
    jac = torch.autograd.functional.jacobian(
        lambda v: model.flow(v.view(1, 3, 2, 2), cond.cond_feat)[0].flatten(), y.flatten())
    z = model.flow(y, cond.cond_feat)[0]
    for use_gt, mean in ((False, cond.color_map), (True, y)):
        log_p = torch.distributions.Normal(mean, 1.0).log_prob(z).sum()
        expected = -(torch.linalg.slogdet(jac)[1] + log_p) / (math.log(2) * 4)
        torch.testing.assert_close(model.nll(low, y, use_gt_mean=use_gt)[0], expected)
    torch.testing.assert_close(model.nll(low, y), model.nll(low, y, use_gt_mean=False))  # eval: always μ(LL)


def test_train_gt_ratio_picks_the_ground_truth_mean():
    low, y = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 8, 8)
    model = tiny(train_gt_ratio=1.0).train()
    model.nll(low, y)  # the first training forward initialises the ActNorms
    with torch.no_grad():
        gt, own = model.nll(low, y, use_gt_mean=True), model.nll(low, y, use_gt_mean=False)
        assert not torch.allclose(gt, own)
        torch.testing.assert_close(model.nll(low, y), gt)
        model.train_gt_ratio = 0.0
        torch.testing.assert_close(model.nll(low, y), own)
        model.train_gt_ratio = 0.2
        draws = [torch.allclose(model.nll(low, y), gt) for _ in range(50)]
    assert 2 <= sum(draws) <= 20  # ~ 10 of 50 batches use the ground-truth mean


def test_first_training_nll_initialises_actnorm_from_data():
    model = tiny().train()
    norms = [m for m in model.flow.modules() if m.__class__.__name__ == "ActNorm2d"]
    assert norms and all((n.bias == 0).all() for n in norms)
    model.nll(torch.rand(2, 3, 32, 32), torch.randn(2, 3, 8, 8) * 3 + 1, use_gt_mean=False)
    assert all(n.inited and (n.bias != 0).any() for n in norms)
    explicit = tiny().eval()
    low, y = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 8, 8)
    assert explicit.initialize_actnorm(low, y) == len(norms) and not explicit.training
    assert explicit.initialize_actnorm(low, y) == 0
    loaded = tiny()
    loaded.load_state_dict(explicit.state_dict())
    assert loaded.initialize_actnorm(low, y) == 0
    torch.testing.assert_close(loaded.state_dict(), explicit.state_dict())


def test_nll_is_finite_and_decreases_under_adam():
    torch.manual_seed(0)
    model = tiny(train_gt_ratio=0.0).train()  # the conditional mean every step: a smooth objective
    low = torch.rand(4, 3, 32, 32)
    y = torch.tanh(nn.functional.avg_pool2d(low, 4) * 3 - 1)  # a latent that depends on the input
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = model.nll(low, y).mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


def test_heat_zero_inference_is_deterministic_and_is_the_inverse_flow_of_the_mean():
    model = tiny().eval()
    _randomize_flow(model.flow, std=0.05)
    low = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model.enhance_latent(low)
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
        torch.testing.assert_close(model.enhance_latent(low), out, rtol=0, atol=0)
        torch.testing.assert_close(model(low), out, rtol=0, atol=0)
        cond = model.condition(low)
        torch.testing.assert_close(model.flow.inverse(cond.color_map, cond.cond_feat)[0], out)
        torch.testing.assert_close(model.flow(out, cond.cond_feat)[0], cond.color_map, rtol=1e-4, atol=1e-4)
        hot = [model.enhance_latent(low, heat=0.5, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    torch.testing.assert_close(hot[0], hot[1])
    assert not torch.allclose(hot[0], out) and not torch.allclose(hot[0], hot[2])


def test_latent_regression_loss_is_l1_plus_mse_of_the_heat_zero_latent():
    model = tiny().eval()
    low, y = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        diff = model.enhance_latent(low) - y
        torch.testing.assert_close(model.latent_regression_loss(low, y), diff.abs().mean() + (diff ** 2).mean())
