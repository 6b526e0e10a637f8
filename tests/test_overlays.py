"""Overlay drawing: which epochs draw, and how gray and RGB inputs are shown."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lightning_modules.callbacks import SegmentationOverlays
from lightning_modules.visualize import display_image, overlay_figure


def test_validation_overlays_every_n_epochs_and_after_the_last():
    callback = SegmentationOverlays(every_n_epochs=5)
    drawn = [e for e in range(12) if callback._draws_at(SimpleNamespace(current_epoch=e, max_epochs=12))]
    assert drawn == [4, 9, 11]
    with pytest.raises(ValueError, match="every_n_epochs"):
        SegmentationOverlays(every_n_epochs=0)


def test_gray_and_rgb_inputs_are_shown_as_images():
    gray, rgb = np.random.rand(1, 8, 6), np.random.rand(3, 8, 6)
    assert display_image(gray).shape == (8, 6) and display_image(gray[0]).shape == (8, 6)
    assert display_image(rgb).shape == (8, 6, 3)
    np.testing.assert_array_equal(display_image(rgb)[..., 1], rgb[1].astype(np.float32))
    label = np.zeros((8, 6), np.int64)
    label[2:4, 2:4] = 1
    fig = overlay_figure([display_image(rgb)], [label], [label], ["background", "lesion"])
    assert len(fig.axes) == 3
