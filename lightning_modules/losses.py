"""Segmentation losses of the TransUNet lineage (CSWin-UNet, D-LKA 2D, Perspective+ ...).

* :class:`SoftDiceLoss` -- the official TransUNet ``DiceLoss(softmax=True)``:
  softmax probabilities, a one-hot target over **all** classes (background
  included), squared terms in the denominator, sums over the whole batch, then
  the mean over classes::

      L_dice = mean_c [ 1 - (2 Σ p_c t_c + s) / (Σ p_c² + Σ t_c² + s) ],   s = 1e-5

* :class:`CEDiceLoss` -- ``ce_weight · CE + dice_weight · Dice``; the released
  CSWin-UNet recipe is 0.4 CE + 0.6 Dice (the paper's α, β of Table 8, with α on
  CE following the code).
* :class:`NNUNetDiceCELoss` -- the ConvFormer release's nnU-Net ``DC_and_CE_loss``: CE + (1 − batch
  soft Dice without background, non-squared denominators), weights 1:1.

Shapes: logits ``(B, C, *spatial)`` with any number of spatial dimensions (2-D
``(B, C, H, W)`` and 3-D ``(B, C, D, H, W)``), integer targets ``(B, *spatial)``
holding class indices in ``[0, C)`` (a singleton channel ``(B, 1, *spatial)`` is
accepted too).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftDiceLoss", "CEDiceLoss", "NNUNetDiceCELoss"]


def _prepare_target(logits: Tensor, target: Tensor) -> Tensor:
    """Integer target of shape (B, *spatial), checked against ``logits`` (B, C, *spatial)."""
    if logits.dim() < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape {expected} (or with a singleton channel) for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.dtype != torch.long:  # one_hot and cross_entropy need int64 indices
        target = target.long()
    return target


class SoftDiceLoss(nn.Module):
    """Multi-class soft Dice loss with squared denominators (official TransUNet ``DiceLoss``).

    Args:
        num_classes: C, including background.
        smooth: the additive constant in numerator and denominator (1e-5 officially).
        include_background: if False, class 0 is left out of the mean over
            classes (its probabilities still take part in the softmax).
        ignore_index: optional target value whose pixels are excluded from every
            sum (the official loss has none).

    ``forward(logits (B, C, *spatial), target (B, *spatial)) -> scalar``. For each
    class c, with p = softmax(logits) and t = one_hot(target), sums run over the
    batch and all pixels at once::

        loss_c = 1 - (2 Σ p_c t_c + smooth) / (Σ p_c² + Σ t_c² + smooth)

    and the result is the mean of ``loss_c`` over the included classes. The sums
    are computed in float32 (or the input's precision if higher), so mixed
    precision does not overflow them.
    """

    def __init__(
        self,
        num_classes: int,
        smooth: float = 1e-5,
        include_background: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.ignore_index = ignore_index

    def per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-class Dice losses ``(C,)`` (all classes, background included)."""
        target = _prepare_target(logits, target)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, expected num_classes={self.num_classes}")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits.to(dtype), dim=1)
        valid = None
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target = torch.where(valid, target, torch.zeros_like(target))
        # Range check on the CPU only: on accelerators it would force a host sync each step.
        if target.device.type == "cpu" and target.numel() and (
            int(target.min()) < 0 or int(target.max()) >= self.num_classes
        ):
            raise ValueError(
                f"target values must lie in [0, {self.num_classes}), "
                f"got [{int(target.min())}, {int(target.max())}]"
            )
        # One-hot (B, C, *spatial) in the probabilities' own layout: the products below then
        # run on matching memory layouts (a one_hot(...).movedim view would not), and t² = t.
        onehot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
        if valid is not None:
            mask = valid.unsqueeze(1).to(dtype)
            probs = probs * mask
            onehot = onehot * mask
        reduce_dims = [0] + list(range(2, logits.dim()))
        intersect = (probs * onehot).sum(dim=reduce_dims)
        p_sum = (probs * probs).sum(dim=reduce_dims)
        t_sum = onehot.sum(dim=reduce_dims)
        return 1.0 - (2.0 * intersect + self.smooth) / (p_sum + t_sum + self.smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        losses = self.per_class(logits, target)
        if not self.include_background:
            losses = losses[1:]
        return losses.mean()


class CEDiceLoss(nn.Module):
    """``ce_weight · CrossEntropy + dice_weight · SoftDiceLoss`` (released CSWin-UNet: 0.4 / 0.6).

    Args:
        num_classes: C, including background.
        ce_weight: weight α of the (unweighted, mean-reduced) cross-entropy.
        dice_weight: weight β of :class:`SoftDiceLoss`.
        ignore_index: optional target value ignored by both terms.
        smooth, include_background: passed to :class:`SoftDiceLoss`.

    A term whose weight is 0 is not computed at all (and absent from the parts).

    API:
        * ``forward(logits, target) -> Tensor``: the weighted total (scalar), so
          the module drops in wherever a loss is expected;
        * ``forward_with_parts(logits, target) -> (total, parts)``: the same total
          and a dict of the **unweighted** terms that were computed, keys
          ``"ce"`` and/or ``"dice"`` (tensors attached to the graph; detach them
          to log).

    Shapes: logits ``(B, C, *spatial)``, target ``(B, *spatial)`` integer class indices.
    """

    def __init__(
        self,
        num_classes: int,
        ce_weight: float = 0.4,
        dice_weight: float = 0.6,
        ignore_index: int | None = None,
        smooth: float = 1e-5,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        if ce_weight < 0 or dice_weight < 0:
            raise ValueError(f"loss weights must be non-negative, got ce={ce_weight}, dice={dice_weight}")
        if ce_weight == 0 and dice_weight == 0:
            raise ValueError("at least one of ce_weight and dice_weight must be positive")
        self.num_classes = int(num_classes)
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index
        self.dice = SoftDiceLoss(
            num_classes, smooth=smooth, include_background=include_background, ignore_index=ignore_index
        )

    def forward_with_parts(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        target = _prepare_target(logits, target)
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.ce_weight > 0:
            ignore = -100 if self.ignore_index is None else self.ignore_index
            parts["ce"] = F.cross_entropy(logits, target, ignore_index=ignore)
            total = self.ce_weight * parts["ce"]
        if self.dice_weight > 0:
            parts["dice"] = self.dice(logits, target)
            term = self.dice_weight * parts["dice"]
            total = term if total is None else total + term
        assert total is not None
        return total, parts

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.forward_with_parts(logits, target)[0]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ce_weight={self.ce_weight}, dice_weight={self.dice_weight}"


class NNUNetDiceCELoss(nn.Module):
    """nnU-Net ``DC_and_CE_loss`` as the ConvFormer release configures it: ``ce_weight · CE + dice_weight · L_dice``.

    ``DC_and_CE_loss({'batch_dice': True, 'smooth': 1e-5, 'do_bg': False}, {}, weight_ce=1)``
    (``train.py``), weights 1:1. With p = softmax(logits) and t = one_hot(target), per class c
    and summed over the batch and all pixels (``batch_dice``; per sample otherwise)::

        tp = Σ p_c t_c,  fp = Σ p_c (1 − t_c),  fn = Σ (1 − p_c) t_c
        dc_c = (2 tp + smooth) / (2 tp + fp + fn + smooth + 1e-8)
        L_dice = 1 − mean_{c ≥ 1} dc_c          (background left out of the mean)

    The ``+1e-8`` and the ``1 − dc`` form are the author's nnU-Net copy (``dice_loss.py`` of
    xianlin7/BATFormer, the same codebase; ConvFormer ships that file as bytecode only). CE is
    the plain mean-reduced cross-entropy.

    Args:
        num_classes: C, including background.
        ce_weight, dice_weight: the two weights (1, 1 in the release).
        smooth: additive constant of the Dice (1e-5 in the release).
        include_background: ``do_bg`` (False in the release).
        batch_dice: sums over the batch too (True in the release); else Dice per sample and class, then the mean.

    ``forward(logits (B, C, *spatial), target (B, *spatial)) -> scalar``;
    ``forward_with_parts`` also returns the unweighted ``{"ce", "dice"}`` (``dice`` = 1 − Dice).
    Sums are computed in float32 at least.
    """

    def __init__(self, num_classes: int, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5,
                 include_background: bool = False, batch_dice: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got ce={ce_weight}, dice={dice_weight}")
        self.num_classes = int(num_classes)
        self.ce_weight, self.dice_weight = float(ce_weight), float(dice_weight)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.batch_dice = bool(batch_dice)

    def soft_dice(self, logits: Tensor, target: Tensor) -> Tensor:
        """Soft Dice ``(C,)`` per class (batch Dice) or ``(B, C)`` (per sample), background included."""
        target = _prepare_target(logits, target)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, expected num_classes={self.num_classes}")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits.to(dtype), dim=1)
        onehot = F.one_hot(target, self.num_classes).movedim(-1, 1).to(dtype)
        axes = ([0] if self.batch_dice else []) + list(range(2, logits.dim()))
        tp = (probs * onehot).sum(axes)
        fp = (probs * (1 - onehot)).sum(axes)
        fn = ((1 - probs) * onehot).sum(axes)
        return (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth + 1e-8)

    def forward_with_parts(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        target = _prepare_target(logits, target)
        parts: dict[str, Tensor] = {}
        total = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
        if self.ce_weight > 0:
            parts["ce"] = F.cross_entropy(logits, target)
            total = total + self.ce_weight * parts["ce"]
        if self.dice_weight > 0:
            dc = self.soft_dice(logits, target)
            if not self.include_background:
                dc = dc[..., 1:]
            parts["dice"] = 1.0 - dc.mean()
            total = total + self.dice_weight * parts["dice"]
        return total, parts

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.forward_with_parts(logits, target)[0]

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, ce_weight={self.ce_weight}, dice_weight={self.dice_weight}, "
                f"smooth={self.smooth}, include_background={self.include_background}, batch_dice={self.batch_dice}")
