"""lightning_modules/grad_layout.py: gradients take their parameters' strides, so DDP does not warn."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ablations.framework.provenance import REPO_ROOT
from lightning_modules.grad_layout import align_gradient_strides


def _channels_last_input(channels: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 6, 5, channels).permute(0, 3, 1, 2)  # (B, C, H, W) with channels-last strides


@pytest.mark.parametrize("conv", [nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1)],
                         ids=["depthwise", "pointwise"])
def test_gradients_take_the_parameter_strides_with_the_same_values(conv):
    x = _channels_last_input(8)
    conv(x).square().sum().backward()
    plain = conv.weight.grad.clone(memory_format=torch.preserve_format)
    assert plain.stride() != conv.weight.stride()  # what the CPU kernel returns for channels-last input
    conv.zero_grad(set_to_none=True)
    assert align_gradient_strides(conv) == 1 and align_gradient_strides(conv) == 0  # hooked once
    conv(x).square().sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()
    assert torch.equal(conv.weight.grad, plain)
    conv(x).square().sum().backward()  # accumulation into the aligned gradient keeps its strides
    assert conv.weight.grad.stride() == conv.weight.stride() and torch.equal(conv.weight.grad, 2 * plain)


def test_a_gradient_in_another_memory_order_is_left_alone():
    weight = nn.Parameter(torch.randn(3, 1, 4))
    align_gradient_strides(nn.ParameterList([weight]))
    (weight * torch.ones(4, 1, 3).permute(2, 1, 0)).sum().backward()  # contiguous gradient: nothing to do
    assert weight.grad.stride() == weight.stride()
    weight.grad = None
    grad = torch.randn(4, 1, 3).permute(2, 1, 0)  # truly transposed memory
    torch.autograd.backward(weight, grad)
    assert torch.equal(weight.grad, grad)


_DDP_SCRIPT = """
import sys, warnings
import torch, torch.distributed as dist
from torch import nn
from ablations.framework.provenance import REPO_ROOT
from lightning_modules.grad_layout import align_gradient_strides
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
if sys.argv[2] == "aligned":
    align_gradient_strides(conv)
model = nn.parallel.DistributedDataParallel(conv)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model(torch.randn(2, 6, 5, 8).permute(0, 3, 1, 2)).sum().backward()
print(sum("Grad strides do not match" in str(w.message) for w in caught))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("mode", ["plain", "aligned"])
def test_ddp_warns_about_bucket_strides_only_without_the_hooks(mode, tmp_path):
    """In a fresh process each: DDP warns once per process, so an earlier warning would hide the result."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    result = subprocess.run([sys.executable, "-c", _DDP_SCRIPT, str(tmp_path / "store"), mode], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) == (1 if mode == "plain" else 0)
