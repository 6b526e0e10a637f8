"""Parameter and MAC counters against hand-computed values (the benchmark report: test_benchmarks.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.complexity import (
    count_parameters,
    macs_all,
    macs_all_by_op,
    macs_conv_linear,
    macs_conv_linear_by_module,
)
from models import create_model


# --------------------------------------------------------------------------------------------
# Conv + Linear hooks: analytic formulas, by hand
# --------------------------------------------------------------------------------------------
def test_conv2d_macs():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)  # 16×16 → 8×8
    x = torch.randn(2, 3, 16, 16)
    assert macs_conv_linear(conv, x) == 2 * 8 * 8 * 8 * (3 * 3 * 3)


def test_grouped_and_depthwise_conv_macs():
    grouped = nn.Conv2d(8, 12, kernel_size=3, padding=1, groups=4, bias=False)
    assert macs_conv_linear(grouped, torch.randn(1, 8, 5, 7)) == 12 * 5 * 7 * (8 // 4) * 9
    depthwise = nn.Conv2d(6, 6, kernel_size=3, padding=1, groups=6)
    assert macs_conv_linear(depthwise, torch.randn(1, 6, 4, 4)) == 6 * 4 * 4 * 1 * 9


def test_transposed_conv_macs_count_each_input_element_once_per_weight():
    deconv = nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2)  # 5×5 → 10×10
    x = torch.randn(1, 6, 5, 5)
    expected = 6 * 5 * 5 * 4 * 2 * 2  # every input element meets C_out·k² weights
    assert macs_conv_linear(deconv, x) == expected
    assert macs_all(deconv, x) == expected  # the same convention as FlopCounterMode
    grouped = nn.ConvTranspose2d(4, 6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2)
    assert macs_conv_linear(grouped, torch.randn(1, 4, 3, 3)) == 4 * 3 * 3 * (6 // 2) * 9


def test_linear_on_tokens_macs():
    linear = nn.Linear(32, 48)
    tokens = torch.randn(2, 49, 32)  # (B, N, C)
    assert macs_conv_linear(linear, tokens) == 2 * 49 * 32 * 48
    assert macs_all(linear, tokens) == 2 * 49 * 32 * 48


def test_conv3d_and_conv1d_macs():
    conv3d = nn.Conv3d(2, 4, kernel_size=3, padding=1)
    assert macs_conv_linear(conv3d, torch.randn(1, 2, 4, 6, 6)) == 4 * 4 * 6 * 6 * 2 * 27
    conv1d = nn.Conv1d(3, 5, kernel_size=5)  # 20 → 16
    assert macs_conv_linear(conv1d, torch.randn(2, 3, 20)) == 2 * 5 * 16 * 3 * 5


def test_multihead_attention_counts_its_four_projections():
    mha = nn.MultiheadAttention(16, 4, batch_first=True, kdim=8, vdim=12)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 8), torch.randn(2, 7, 12)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, q, k, v):
            return self.mha(q, k, v, need_weights=False)[0]

    expected = 2 * 5 * 16 * 16 + 2 * 7 * 8 * 16 + 2 * 7 * 12 * 16 + 2 * 5 * 16 * 16
    assert macs_conv_linear(Wrap(), q, k, v) == expected


def test_repeated_calls_accumulate_and_functional_calls_are_not_counted():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4, bias=False)

        def forward(self, x):
            return F.linear(self.fc(self.fc(x)), self.fc.weight)

    net = Net()
    assert macs_conv_linear_by_module(net, torch.randn(3, 4)) == {"fc": 2 * 3 * 4 * 4}
    assert macs_all(net, torch.randn(3, 4)) == 3 * 3 * 4 * 4


def test_counting_restores_the_training_flag():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    macs_conv_linear(net, torch.randn(1, 4))
    macs_all(net, torch.randn(1, 4))
    assert net.training


# --------------------------------------------------------------------------------------------
# FlopCounterMode convention
# --------------------------------------------------------------------------------------------
def test_macs_all_of_a_pure_linear_model():
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    assert macs_all(net, torch.randn(3, 10)) == 3 * (10 * 20 + 20 * 5)
    assert macs_all(net, torch.randn(3, 10)) == macs_conv_linear(net, torch.randn(3, 10))


def test_cpu_fused_attention_is_counted():
    """torch's FlopCounterMode has no formula for the CPU SDPA kernel; ours adds the standard one."""

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    b, h, l_q, s, e, e_v = 2, 3, 10, 7, 8, 5
    q, k, v = torch.randn(b, h, l_q, e), torch.randn(b, h, s, e), torch.randn(b, h, s, e_v)
    by_op = macs_all_by_op(Attn(), q, k, v)
    assert sum(by_op.values()) == b * h * l_q * s * (e + e_v)

    class Explicit(nn.Module):  # the same product written with matmuls
        def forward(self, q, k, v):
            return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    assert macs_all(Explicit(), q, k, v) == b * h * l_q * s * (e + e_v)


def test_deformable_convolutions_count_as_convolutions_in_both_conventions():
    """A deformable conv's ``weight`` is a convolution (torchvision's op has no counter formula: ours adds it)."""
    import torchvision

    from models.layers.deformable import ModulatedDeformConv2d

    x = torch.randn(2, 8, 6, 10)
    dcn = ModulatedDeformConv2d(8, 16, 3, padding=1, deformable_groups=2)
    main, predictor = 2 * 6 * 10 * 16 * (8 * 9), 2 * 6 * 10 * (3 * 2 * 9) * (8 * 9)
    assert macs_conv_linear_by_module(dcn, x) == {"": main, "conv_offset": predictor}
    assert macs_all_by_op(dcn, x) == {"aten.convolution": predictor, "torchvision.deform_conv2d": main}
    plain = torchvision.ops.DeformConv2d(8, 4, 3, stride=2, padding=1, groups=2)
    offset = torch.zeros(2, 18, 3, 5)
    assert macs_conv_linear(plain, x, offset) == macs_all(plain, x, offset) == 2 * 3 * 5 * 4 * (4 * 9)


def test_count_parameters_total_and_trainable():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == (4 * 3 + 3 + 3 * 2, 3 + 3 * 2)
    tied = nn.Sequential(net[1], net[1])  # a shared parameter counts once
    assert count_parameters(tied).total == 6


# --------------------------------------------------------------------------------------------
# The paper model against the official counts (shared/papers/cswin_unet.md §2.7, Addendum 6)
# --------------------------------------------------------------------------------------------
def test_cswin_unet_macs_equal_the_official_counts():
    model = create_model("cswin_unet")
    x = torch.randn(1, 3, 224, 224)
    assert count_parameters(model).total == 23_568_492
    assert macs_conv_linear(model, x) == 4_707_035_648
    by_op = macs_all_by_op(model, x)
    # Conv+Linear (4,707,035,648) + CARAFE reassembly bmm (35,223,552) + stripe attention (271,853,568);
    # on the CPU the attention is two batched products (models/layers/explicit_attention.py): q·kᵀ (baddbmm), P·v (bmm)
    assert by_op["aten.baddbmm"] == 271_853_568 // 2
    assert by_op["aten.bmm"] == 35_223_552 + 271_853_568 // 2
    assert sum(by_op.values()) == 5_014_112_768
