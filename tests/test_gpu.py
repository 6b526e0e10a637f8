"""CUDA tier (``pytest -m gpu``): fused paths on the GPU agree with the CPU, bf16 steps run.

Skipped (by ``conftest.py``) where no CUDA device exists; CI never has one.
"""
from __future__ import annotations

import pytest
import torch

from lightning_modules.profiling import benchmark_cuda
from models import create_model
from models.layers import CARAFE, CrossShapedWindowAttention

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _exact_cuda_matmuls():
    """TF32 would make float32 CUDA results differ from the CPU by ~1e-3."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("full", [False, True])
def test_fused_cswin_attention_on_cuda_matches_cpu(full):
    module = CrossShapedWindowAttention(dim=64, num_heads=4, split_size=7, full_attention=full).eval()
    x = torch.randn(2, 28, 28, 64)
    with torch.no_grad():
        expected = module(x)
        got = module.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_carafe_on_cuda_matches_cpu():
    module = CARAFE(32, 16, scale=2).eval()
    x = torch.randn(2, 32, 14, 10)
    with torch.no_grad():
        torch.testing.assert_close(module.cuda()(x.cuda()).cpu(), module.cpu()(x), rtol=1e-4, atol=1e-5)


def test_bf16_mixed_forward_is_close_to_float32():
    model = create_model("cswin_unet_test").cuda().eval()
    x = torch.randn(2, 1, 64, 64, device="cuda")
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = model(x).float()
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 mantissa bits: a few tenths of a percent per op, a few percent over the network
    assert (mixed - reference).abs().mean() < 0.05 * reference.abs().mean()


def test_benchmark_cuda_reports_throughput_and_memory():
    result = benchmark_cuda(create_model("cswin_unet_test"), torch.randn(2, 1, 64, 64), warmup=2, iters=3)
    assert result["precision"] == "bf16-mixed"
    for step in ("fwd", "fwd_bwd"):
        assert result[step]["img_per_s"] > 0 and result[step]["peak_mem_mib"] > 0
