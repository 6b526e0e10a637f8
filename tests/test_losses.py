"""Losses: the TransUNet-lineage soft Dice and the CE + Dice combination."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.losses import CEDiceLoss, SoftDiceLoss


def _loop_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float, classes) -> float:
    """Independent reference with explicit Python loops over batch, pixels and classes."""
    logits = logits.double()
    b, c = logits.shape[:2]
    flat_logits = logits.reshape(b, c, -1)
    flat_target = target.reshape(b, -1)
    per_class = []
    for k in classes:
        inter = p2 = t2 = 0.0
        for i in range(b):
            for j in range(flat_logits.shape[2]):
                exps = [math.exp(float(flat_logits[i, q, j])) for q in range(c)]
                p = exps[k] / sum(exps)
                t = 1.0 if int(flat_target[i, j]) == k else 0.0
                inter += p * t
                p2 += p * p
                t2 += t * t
        per_class.append(1.0 - (2.0 * inter + smooth) / (p2 + t2 + smooth))
    return sum(per_class) / len(per_class)


def _loop_ce(logits: torch.Tensor, target: torch.Tensor) -> float:
    logits = logits.double()
    b, c = logits.shape[:2]
    flat_logits = logits.reshape(b, c, -1)
    flat_target = target.reshape(b, -1)
    total, n = 0.0, 0
    for i in range(b):
        for j in range(flat_logits.shape[2]):
            vals = [float(flat_logits[i, q, j]) for q in range(c)]
            lse = math.log(sum(math.exp(v) for v in vals))
            total += lse - vals[int(flat_target[i, j])]
            n += 1
    return total / n


def test_soft_dice_hand_computed_tiny_example():
    # 1 image, 2 classes, 2 pixels. Logits chosen so the softmax is simple: p1 = sigmoid(l1 - l0).
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])  # (1, 1, 2)
    # pixel 0: p = (1/2, 1/2); pixel 1: p = (1/4, 3/4)
    # class 0: t = (0, 1): inter = 1/4, Σp² = 1/4 + 1/16, Σt² = 1
    # class 1: t = (1, 0): inter = 1/2, Σp² = 1/4 + 9/16, Σt² = 1
    s = 1e-5
    l0 = 1 - (2 * 0.25 + s) / (0.25 + 1 / 16 + 1 + s)
    l1 = 1 - (2 * 0.5 + s) / (0.25 + 9 / 16 + 1 + s)
    loss = SoftDiceLoss(2)(logits, target)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert SoftDiceLoss(2, include_background=False)(logits, target).item() == pytest.approx(l1, rel=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
def test_soft_dice_matches_loop_reference_2d(include_background):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=g)
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    loss = SoftDiceLoss(4, include_background=include_background)(logits, target)
    classes = range(4) if include_background else range(1, 4)
    assert loss.item() == pytest.approx(_loop_dice(logits, target, 1e-5, classes), rel=1e-5)


def test_soft_dice_3d_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 3, 4, generator=g)
    target = torch.randint(0, 3, (1, 2, 3, 4), generator=g)
    loss = SoftDiceLoss(3)(logits, target)
    assert loss.item() == pytest.approx(_loop_dice(logits, target, 1e-5, range(3)), rel=1e-5)
    # singleton-channel targets and other integer/float dtypes are accepted
    assert SoftDiceLoss(3)(logits, target[:, None]).item() == pytest.approx(loss.item())
    for dtype in (torch.uint8, torch.int32, torch.float32):
        expected = CEDiceLoss(3)(logits, target).item()
        assert CEDiceLoss(3)(logits, target.to(dtype)).item() == pytest.approx(expected)


def test_soft_dice_smooth_matters_for_absent_class():
    # A class absent from the target and predicted with ~0 probability: loss ~ 1 - smooth/(Σp² + smooth).
    logits = torch.tensor([[[[10.0, 10.0]], [[-10.0, -10.0]]]])
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    per_class = SoftDiceLoss(2, smooth=1.0).per_class(logits, target)
    p1 = torch.softmax(logits, 1)[0, 1, 0]
    expected = 1 - 1.0 / (float((p1**2).sum()) + 1.0)
    assert per_class[1].item() == pytest.approx(expected, abs=1e-6)


def test_perfect_prediction_gives_near_zero_dice_loss():
    target = torch.randint(0, 5, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    logits = F.one_hot(target, 5).permute(0, 3, 1, 2).float() * 50.0
    assert SoftDiceLoss(5)(logits, target).item() == pytest.approx(0.0, abs=1e-5)
    total, parts = CEDiceLoss(5).forward_with_parts(logits, target)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    assert set(parts) == {"ce", "dice"}


def test_ce_dice_combination_and_parts():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    loss_fn = CEDiceLoss(3)  # released CSWin-UNet weights 0.4 CE, 0.6 Dice
    assert (loss_fn.ce_weight, loss_fn.dice_weight) == (0.4, 0.6)
    total, parts = loss_fn.forward_with_parts(logits, target)
    ce_ref = _loop_ce(logits, target)
    dice_ref = _loop_dice(logits, target, 1e-5, range(3))
    assert parts["ce"].item() == pytest.approx(ce_ref, rel=1e-5)
    assert parts["dice"].item() == pytest.approx(dice_ref, rel=1e-5)
    assert total.item() == pytest.approx(0.4 * ce_ref + 0.6 * dice_ref, rel=1e-5)
    assert loss_fn(logits, target).item() == pytest.approx(total.item())


def test_gradients_flow():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    CEDiceLoss(3)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    logits3 = torch.randn(1, 2, 3, 4, 4, generator=g, requires_grad=True)
    target3 = torch.randint(0, 2, (1, 3, 4, 4), generator=g)
    SoftDiceLoss(2)(logits3, target3).backward()
    assert logits3.grad.abs().sum() > 0


def test_zero_weights_skip_terms(monkeypatch):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)

    def boom(*args, **kwargs):
        raise AssertionError("cross-entropy computed although its weight is 0")

    dice_only = CEDiceLoss(3, ce_weight=0.0, dice_weight=1.0)
    monkeypatch.setattr(F, "cross_entropy", boom)
    total, parts = dice_only.forward_with_parts(logits, target)
    monkeypatch.undo()
    assert set(parts) == {"dice"}
    assert total.item() == pytest.approx(SoftDiceLoss(3)(logits, target).item())

    ce_only = CEDiceLoss(3, ce_weight=1.0, dice_weight=0.0)
    ce_only.dice.forward = boom  # the Dice term must not be evaluated
    total, parts = ce_only.forward_with_parts(logits, target)
    assert set(parts) == {"ce"}
    assert total.item() == pytest.approx(F.cross_entropy(logits, target).item())

    with pytest.raises(ValueError):
        CEDiceLoss(3, ce_weight=0.0, dice_weight=0.0)


def test_ignore_index_excludes_pixels_from_both_terms():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    ignored = target.clone()
    ignored[0, 0, :] = 255
    loss_fn = CEDiceLoss(3, ce_weight=0.5, dice_weight=0.5, ignore_index=255)
    _, parts = loss_fn.forward_with_parts(logits, ignored)
    # same as evaluating on the kept pixels only
    keep_logits = logits[:, :, 1:, :]
    keep_target = target[:, 1:, :]
    assert parts["ce"].item() == pytest.approx(F.cross_entropy(keep_logits, keep_target).item(), rel=1e-6)
    assert parts["dice"].item() == pytest.approx(SoftDiceLoss(3)(keep_logits, keep_target).item(), rel=1e-6)


def test_bad_inputs_fail_clearly():
    logits = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="target"):
        SoftDiceLoss(3)(logits, torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        SoftDiceLoss(4)(logits, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target values"):
        SoftDiceLoss(3)(logits, torch.full((1, 4, 4), 3, dtype=torch.long))
