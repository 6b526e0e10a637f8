"""NNUNetDiceCELoss (the ConvFormer release's nnU-Net DC_and_CE_loss) against hand and loop-written computations."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.losses import NNUNetDiceCELoss


def test_hand_computed_tiny_example():
    # one image, two pixels, two classes: p(class 1) = 3/4 and 1/2; targets 1 and 0
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    tp, fp, fn = 0.75, 0.5, 0.25
    dice = 1 - (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5 + 1e-8)  # background left out
    ce = (-math.log(0.75) - math.log(0.5)) / 2
    loss = NNUNetDiceCELoss(2)
    total, parts = loss.forward_with_parts(logits, target)
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-12)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert total.item() == pytest.approx(ce + dice, rel=1e-12)  # weights 1:1
    assert NNUNetDiceCELoss(2, ce_weight=0.0)(logits, target).item() == pytest.approx(dice, rel=1e-12)


def _loop_dice(probs, onehot, smooth, batch):
    """Per class (and sample unless ``batch``), the literal tp/fp/fn sums: (C,) or (B, C)."""
    b, c = probs.shape[:2]
    out = torch.zeros(c if batch else (b, c), dtype=probs.dtype)
    for k in range(c):
        samples = [list(range(b))] if batch else [[i] for i in range(b)]
        for s, idx in enumerate(samples):
            p, t = probs[idx, k], onehot[idx, k]
            tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
            value = (2 * tp + smooth) / (2 * tp + fp + fn + smooth + 1e-8)
            if batch:
                out[k] = value
            else:
                out[s, k] = value
    return out


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("include_background", [False, True])
def test_matches_loop_reference(batch_dice, include_background):
    logits = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 5, 6))
    target[1] = 0  # one image without foreground: per-sample Dice then relies on the smoothing
    probs = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(target, 4).movedim(-1, 1).double()
    ref = _loop_dice(probs, onehot, 1e-5, batch_dice)
    ref = ref[..., 0 if include_background else 1:]
    loss = NNUNetDiceCELoss(4, include_background=include_background, batch_dice=batch_dice)
    _, parts = loss.forward_with_parts(logits, target)
    assert parts["dice"].item() == pytest.approx(1 - ref.mean().item(), rel=1e-10)
    assert parts["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-12)


def test_gradients_and_bad_inputs():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    NNUNetDiceCELoss(3)(logits, torch.randint(0, 3, (2, 4, 4))).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="channels"):
        NNUNetDiceCELoss(4)(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        NNUNetDiceCELoss(3, ce_weight=0.0, dice_weight=0.0)
