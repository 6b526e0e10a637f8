"""models/layers/layout.py: channels-last strides for weights whose memory order they leave unchanged."""
from __future__ import annotations

import torch
from torch import nn

from models.layers.layout import channels_last_strides_for_grads


def test_depthwise_and_pointwise_weights_take_channels_last_strides_with_the_same_memory():
    torch.manual_seed(0)
    for conv in (nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(6, 4, 1)):
        before = conv.weight.detach().clone()
        weight = conv.weight
        channels_last_strides_for_grads(conv)
        assert conv.weight is weight  # the same Parameter: optimisers and hooks keep it
        assert torch.equal(conv.weight, before)
        assert conv.weight.flatten().tolist() == before.flatten().tolist()  # memory order unchanged
        assert conv.weight.stride()[1] == 1  # channels-last strides: those of the CPU gradient
        x = torch.randn(2, conv.in_channels, 5, 5).contiguous(memory_format=torch.channels_last)
        conv(x).square().sum().backward()
        assert conv.weight.grad.stride() == conv.weight.stride()


def test_other_weights_are_left_alone():
    conv = nn.Conv2d(4, 8, 3)  # channels-last would be another memory order
    strides = conv.weight.stride()
    channels_last_strides_for_grads(conv)
    assert conv.weight.stride() == strides


def test_a_state_dict_loads_into_either_layout_and_keeps_the_strides():
    plain, restrided = nn.Conv2d(8, 8, 3, groups=8), channels_last_strides_for_grads(nn.Conv2d(8, 8, 3, groups=8))
    strides = restrided.weight.stride()
    restrided.load_state_dict(plain.state_dict())
    assert torch.equal(restrided.weight, plain.weight) and restrided.weight.stride() == strides
    plain.load_state_dict(restrided.state_dict())
    assert torch.equal(restrided.weight, plain.weight)
