"""Whole-volume inference protocols, named after the papers that use them."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.ndimage import zoom
from torch import nn


@torch.no_grad()
def predict_volume_slicewise(
    net: nn.Module,
    volume: np.ndarray,
    img_size: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    argmax_over: Literal["softmax", "logits"] = "softmax",
) -> np.ndarray:
    """TransUNet test protocol: 2-D inference on every axial slice of a volume.

    volume: (D, H, W) float → labels (D, H, W) int64. Each slice is resized to
    ``img_size``² with ``scipy.ndimage.zoom(order=3)``, the class argmax is resized
    back with ``order=0``, as the released ``test_single_volume`` does.

    ``argmax_over="softmax"`` (default, the release): argmax of ``softmax(logits)``
    computed in float32. ``"logits"``: argmax of the logits, which skips the softmax;
    it gives the same labels except at exact ties, and float32 softmax can create ties
    the logits do not have: when the two top logits differ by less than about 3e-8,
    ``exp`` of the difference rounds to 1, both get the same probability and the argmax
    takes the lower class index where the logits' argmax takes the larger logit.
    The softmax costs one pass over a (B, classes, S, S) tensor, negligible next to the net.

    Differences from the release that remain: slices are batched ``batch_size`` at a
    time (the release uses batch 1; the networks are batch-independent in eval mode,
    so only float summation order differs), and the logits are whatever precision the
    net runs in (the release runs fp32).
    """
    if argmax_over not in ("softmax", "logits"):
        raise ValueError(f"argmax_over must be 'softmax' or 'logits', got {argmax_over!r}")
    if volume.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {volume.shape}")
    depth, h, w = volume.shape
    resized = np.stack([
        zoom(s, (img_size / h, img_size / w), order=3) if (h, w) != (img_size, img_size) else s
        for s in volume.astype(np.float32)
    ])
    prediction = np.zeros((depth, h, w), dtype=np.int64)
    was_training = net.training
    net.eval()
    for start in range(0, depth, batch_size):
        batch = torch.from_numpy(resized[start:start + batch_size]).float().unsqueeze(1).to(device)
        logits = net(batch)
        scores = logits.float().softmax(dim=1) if argmax_over == "softmax" else logits
        labels = scores.argmax(dim=1).cpu().numpy()
        for offset, label in enumerate(labels):
            if (h, w) != (img_size, img_size):
                label = zoom(label, (h / img_size, w / img_size), order=0)
            prediction[start + offset] = label
    net.train(was_training)
    return prediction
