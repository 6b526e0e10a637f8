"""Slice-wise volume inference: the release's argmax of softmax, and the logits option."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_modules.inference import predict_volume_slicewise


class FixedLogits(nn.Module):
    """Every pixel gets the same logits; class 1 beats class 0 by only 1e-8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.0, 1e-8, -3.0]).view(1, 3, 1, 1)
        return logits.expand(x.shape[0], 3, *x.shape[-2:]).clone()


def test_float32_softmax_tie_follows_the_release():
    volume = np.zeros((2, 8, 8), dtype=np.float32)
    released = predict_volume_slicewise(FixedLogits(), volume, img_size=8)  # argmax of softmax
    assert (released == 0).all()  # exp(-1e-8) rounds to 1: a tie, resolved to the lower index
    assert (predict_volume_slicewise(FixedLogits(), volume, img_size=8, argmax_over="logits") == 1).all()


def test_softmax_and_logits_agree_without_ties_and_resize_back():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 4, 3, padding=1)
    volume = np.random.default_rng(0).random((3, 48, 40)).astype(np.float32)
    a = predict_volume_slicewise(net, volume, img_size=32, batch_size=2)
    b = predict_volume_slicewise(net, volume, img_size=32, batch_size=2, argmax_over="logits")
    assert a.shape == (3, 48, 40) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="argmax_over"):
        predict_volume_slicewise(net, volume, 32, argmax_over="probs")  # type: ignore[arg-type]
