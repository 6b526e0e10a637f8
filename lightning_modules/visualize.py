"""Figures people look at: segmentation overlays (image | ground truth | prediction)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def class_colors(num_classes: int) -> np.ndarray:
    """(num_classes, 4) RGBA; background transparent, classes from tab10 without its grey (tab20 beyond 9)."""
    if num_classes <= 10:
        palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    else:
        palette = [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]
    colors = np.array([palette[i % len(palette)] for i in range(num_classes - 1)])
    return np.concatenate([np.zeros((1, 4)), colors], axis=0)


def display_image(image) -> np.ndarray:
    """A network input as shown: (1, H, W) or (H, W) → (H, W) gray; (3, H, W) → (H, W, 3) RGB (floats)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 3:
        return np.ascontiguousarray(array.transpose(1, 2, 0))
    return array[0] if array.ndim == 3 else array


def overlay_figure(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    class_names: Sequence[str],
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> plt.Figure:
    """One row per sample: image, image + ground truth, image + prediction, with a class legend.

    images: (H, W) gray or (H, W, 3) RGB floats (:func:`display_image`); labels /
    predictions: (H, W) integer class maps.
    """
    rows = len(images)
    colors = class_colors(len(class_names))
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows + 0.6), squeeze=False)
    for r in range(rows):
        panels = (("image", None), ("ground truth", labels[r]), ("prediction", predictions[r]))
        for c, (name, mask) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(images[r], cmap="gray")
            if mask is not None:
                shown = np.ma.masked_where(mask == 0, mask)
                ax.imshow(shown, cmap=cmap, vmin=0, vmax=len(class_names) - 1, alpha=alpha, interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name)
        if titles:
            axes[r, 0].text(0.02, 0.98, titles[r], transform=axes[r, 0].transAxes, va="top", fontsize=8,
                            color="white")
    handles = [Patch(color=colors[i], label=class_names[i]) for i in range(1, len(class_names))]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
