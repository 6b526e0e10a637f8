"""Whole-image enhancement inference: reflection padding before the network, cropping after.

GLARE's inference scripts (``infer_dataset_lol.py``, ``test_stage3.py`` @ 7ea5027; spec §4.2
step 1) reflect-pad the low-light input by **20 px at the bottom and on the left**
(600 x 400 → 620 x 420, divisible by 4), run the network and crop the output back with
``out[:, :, :h, 20:]``: :data:`GLARE_RELEASE_PADDING`. ``test_stage2.py`` pads the bottom
and right to the next multiple of 2 instead: :func:`padding_to_multiple`.

``np.pad(..., "reflect")`` (the release) and ``F.pad(..., mode="reflect")`` (here) are the
same reflection (the edge pixel is not repeated); a side can be padded by less than its
length only. Padding commutes with the per-pixel input transforms (``/255``, the log), so
it may come before or after them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Padding", "GLARE_RELEASE_PADDING", "padding_to_multiple", "run_padded"]


@dataclass(frozen=True)
class Padding:
    """Pixels added on each side of a ``(..., H, W)`` tensor (:meth:`apply`) and removed again (:meth:`crop`)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def __post_init__(self) -> None:
        if min(self.top, self.bottom, self.left, self.right) < 0:
            raise ValueError(f"padding must be >= 0 on every side, got {self}")

    def apply(self, x: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
        """``x (B, C, H, W)`` → ``(B, C, top + H + bottom, left + W + right)``."""
        h, w = x.shape[-2:]
        if mode == "reflect" and (max(self.top, self.bottom) >= h or max(self.left, self.right) >= w):
            raise ValueError(f"reflection padding {self} needs every pad smaller than the image side; "
                             f"got an image of {h}x{w} (H x W)")
        if not any((self.top, self.bottom, self.left, self.right)):
            return x
        return F.pad(x, (self.left, self.right, self.top, self.bottom), mode=mode)

    def crop(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply` on an output of the padded size: ``(..., H', W')`` → ``(..., H' - pads, W' - pads)``."""
        h, w = y.shape[-2:]
        return y[..., self.top:h - self.bottom, self.left:w - self.right]


#: The GLARE release's evaluation padding: 20 px bottom and left, whatever the image size.
GLARE_RELEASE_PADDING = Padding(bottom=20, left=20)


def padding_to_multiple(height: int, width: int, multiple: int = 4,
                        where: Literal["bottom_right", "bottom_left", "centre"] = "bottom_right") -> Padding:
    """The least padding that makes ``height`` and ``width`` multiples of ``multiple``.

    ``where``: put the extra rows at the bottom and the extra columns on the right
    (``test_stage2.py``'s choice), on the left, or split them around the centre
    (the odd pixel at the bottom / right).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    extra_h, extra_w = -height % multiple, -width % multiple
    if where == "bottom_right":
        return Padding(bottom=extra_h, right=extra_w)
    if where == "bottom_left":
        return Padding(bottom=extra_h, left=extra_w)
    if where == "centre":
        return Padding(top=extra_h // 2, bottom=extra_h - extra_h // 2, left=extra_w // 2,
                       right=extra_w - extra_w // 2)
    raise ValueError(f"where must be 'bottom_right', 'bottom_left' or 'centre', got {where!r}")


def run_padded(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               padding: Padding | int = GLARE_RELEASE_PADDING) -> torch.Tensor:
    """``fn`` on ``x (B, C, H, W)`` reflect-padded, its output cropped back to ``(B, C', H, W)``.

    ``padding``: a :class:`Padding`, or an int ``m`` for :func:`padding_to_multiple` (bottom/right).
    The output must have the padded input's size (an image-to-image network).
    """
    if isinstance(padding, int):
        padding = padding_to_multiple(x.shape[-2], x.shape[-1], padding)
    padded = padding.apply(x)
    y = fn(padded)
    if y.shape[-2:] != padded.shape[-2:]:
        raise ValueError(f"the network's output is {tuple(y.shape[-2:])} for a padded input of "
                         f"{tuple(padded.shape[-2:])}; cropping back needs equal sizes")
    return padding.crop(y)
