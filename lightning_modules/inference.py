"""Whole-volume inference protocols, named after the papers that use them."""
from __future__ import annotations

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
) -> np.ndarray:
    """TransUNet test protocol: 2-D inference on every axial slice of a volume.

    volume: (D, H, W) float → labels (D, H, W) int64. Each slice is resized to
    ``img_size``² with ``scipy.ndimage.zoom(order=3)``, the argmax of the logits is
    resized back with ``order=0`` — exactly as the released ``test_single_volume``.
    Slices are batched (the release uses batch 1; the networks are batch-independent
    in eval mode, so only float summation order differs).
    """
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
        labels = net(batch).argmax(dim=1).cpu().numpy()
        for offset, label in enumerate(labels):
            if (h, w) != (img_size, img_size):
                label = zoom(label, (h / img_size, w / img_size), order=0)
            prediction[start + offset] = label
    net.train(was_training)
    return prediction
