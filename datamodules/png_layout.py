"""The ConvFormer release's PNG layout (ACDC, ISIC 2018): names, dataset presets, checked readers.

On disk (``shared/papers/convformer.md`` §4.1), under a data root::

    <root>/img/<id>.png              ACDC: 8-bit grayscale; ISIC 2018: 8-bit RGB
    <root>/label/<id>.png            8-bit grayscale class indices; for 2-class data any
                                     value > 1 means 1 (so 0/255 masks work)
    <root>/MainPatient/<split>.txt   one id per line, no extension

ACDC ids start with a 4-digit patient number (its first 4 characters are the
patient, for patient-level evaluation). The release never resizes: every PNG
must already have the training size (256 x 256 in the paper).

Shared by the loader (:mod:`datamodules.convformer_png`) and the synthetic writer
(:mod:`datamodules.synthetic_png`), which must agree on it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .errors import DatasetError, describe_path

__all__ = [
    "IMG_DIR",
    "LABEL_DIR",
    "LIST_DIR",
    "PNG_SUFFIX",
    "PNGPreset",
    "PRESETS",
    "get_preset",
    "patient_of",
    "check_patient_ids",
    "load_png_pair",
]

IMG_DIR = "img"
LABEL_DIR = "label"
LIST_DIR = "MainPatient"
PNG_SUFFIX = ".png"


@dataclass(frozen=True)
class PNGPreset:
    """What one data set of the release is: channels, classes, split lists, evaluation unit."""

    name: str
    title: str
    env_var: str
    channels: int  # 1: grayscale, 3: RGB
    class_names: tuple[str, ...]
    train_split: str
    val_split: str | None  # None: the release has no validation list
    test_split: str
    select_on: Literal["val", "test"]  # the split the release selects models on
    eval_mode: Literal["patient", "image"]
    random_crop: bool  # the release's extra random crop to img_size (ACDC/ICH)
    id_example: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def fold_labels(self) -> bool:
        """The release's rule for 2-class data: label values > 1 become 1."""
        return self.num_classes == 2


PRESETS: dict[str, PNGPreset] = {
    "acdc": PNGPreset(
        name="acdc", title="ACDC", env_var="ACDC_DATA_DIR", channels=1,
        class_names=("background", "RV", "Myo", "LV"),
        train_split="trainofficial", val_split="valofficial", test_split="testofficial",
        select_on="val", eval_mode="patient", random_crop=True, id_example="0001_01",
    ),
    "isic2018": PNGPreset(
        name="isic2018", title="ISIC 2018", env_var="ISIC2018_DATA_DIR", channels=3,
        class_names=("background", "lesion"),
        train_split="train", val_split=None, test_split="test",
        select_on="test", eval_mode="image", random_crop=False, id_example="ISIC_0000000",
    ),
}


def get_preset(name: str) -> PNGPreset:
    if name not in PRESETS:
        raise ValueError(f"dataset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def patient_of(image_id: str, eval_mode: str) -> str:
    """The evaluation unit of an image: its first 4 characters (``"patient"``) or the id itself."""
    return image_id[:4] if eval_mode == "patient" else image_id


def check_patient_ids(list_path: Path, ids: Sequence[str]) -> None:
    """DatasetError naming ``list_path`` if some ids do not start with a 4-digit patient number."""
    bad = [i for i in ids if not (len(i) >= 4 and i[:4].isdigit())]
    if bad:
        raise DatasetError(
            f"{describe_path(list_path)}: expected ids that start with a 4-digit patient number "
            f"(e.g. 0001_01; patient-level evaluation groups slices by their first 4 characters); "
            f"found {len(bad)} of {len(ids)} that do not, e.g. {bad[:5]}"
        )


def _read_png(path: Path, what: str) -> np.ndarray:
    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if array is None:
        found = "could not be decoded" if path.is_file() else "does not exist"
        raise DatasetError(f"{describe_path(path)}: expected a readable PNG {what}; the file {found}")
    if array.dtype != np.uint8:
        raise DatasetError(f"{describe_path(path)}: expected an 8-bit PNG {what}; found {array.dtype} pixels")
    return array


def load_png_pair(
    image_path: Path, label_path: Path, *, channels: int, num_classes: int, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (H, W) or (H, W, 3) RGB, label uint8 (H, W) in 0..C-1)``, checked.

    For 2 classes, label values > 1 become 1 (the release's rule); otherwise values
    outside ``0..C-1`` are an error. ``size``: the expected ``(H, W)`` of both.
    """
    image = _read_png(image_path, "image")
    found = 1 if image.ndim == 2 else image.shape[2]
    if found != channels:
        want = "grayscale (1 channel)" if channels == 1 else "RGB (3 channels)"
        raise DatasetError(f"{describe_path(image_path)}: expected a {want} image; found {found} channels")
    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    label = _read_png(label_path, "label")
    if label.ndim != 2:
        raise DatasetError(f"{describe_path(label_path)}: expected a grayscale (1-channel) label of class indices; "
                           f"found {label.shape[2]} channels")
    for path, array in ((image_path, image), (label_path, label)):
        if size is not None and array.shape[:2] != tuple(size):
            raise DatasetError(f"{describe_path(path)}: expected {size[0]}x{size[1]} pixels (the release never "
                               f"resizes); found {array.shape[0]}x{array.shape[1]}")
    if label.shape != image.shape[:2]:
        raise DatasetError(f"{describe_path(label_path)}: expected the image's size {image.shape[:2]}; "
                           f"found {label.shape}")
    if num_classes == 2:
        label = np.minimum(label, 1)
    elif label.max(initial=0) >= num_classes:
        bad = np.unique(label[label >= num_classes])[:8]
        raise DatasetError(f"{describe_path(label_path)}: expected label values in 0..{num_classes - 1} "
                           f"({num_classes} classes); found values {bad.tolist()}")
    return image, label
