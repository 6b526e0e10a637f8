"""Checked readers for image/label files: list files, ``.npz`` slices and HDF5 volumes.

Every reader raises :class:`~datamodules.errors.DatasetError` naming the file, what
was expected and what was found: missing keys, wrong rank, image/label shapes that
differ, non-numeric or non-finite intensities, label values outside ``0..C-1``.
Shared by every datamodule whose release stores ``image``/``label`` arrays
(the TransUNet Synapse release, the ACDC h5 releases, ...).

Arrays returned: image ``float32``, label ``uint8`` (``int64`` beyond 256 classes),
``(H, W)`` for a slice and ``(D, H, W)`` for a volume.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .errors import DatasetError, describe_path

__all__ = [
    "read_list_file",
    "listed_paths",
    "check_listed_files",
    "check_image",
    "check_label",
    "load_npz_slice",
    "open_h5",
    "h5_image_label",
    "h5_volume_shape",
    "load_h5_volume",
]


def read_list_file(path: Path, what: str, hint: str = "") -> list[str]:
    """Names listed in ``path``, one per line (blank lines ignored).

    ``what`` says what a line names; ``hint`` (where such lists come from) is added when the file is missing.
    """
    if not path.is_file():
        reason = "is a folder, not a file" if path.exists() else "not found"
        suffix = f" {hint}." if hint else ""
        raise DatasetError(f"{describe_path(path)}: list file {reason}; expected a text file of {what}.{suffix}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"{describe_path(path)}: could not read the list file ({type(err).__name__}: {err}); "
            f"expected a UTF-8 text file of {what}"
        ) from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{describe_path(path)}: list file is empty; expected {what}, one per line")
    return names


def listed_paths(folder: Path, names: Sequence[str], suffix: str, release: str = "the data set's") -> list[Path]:
    """Paths ``folder/<name><suffix>``, checking only that ``folder`` exists (not the files).

    The whole-set check (:mod:`datamodules.checks`) reports every missing listed file at once.
    """
    require_folder(folder, f"{release} '{folder.name}/' folder of *{suffix} files inside the data root "
                           f"{describe_path(folder.parent)}")
    return [folder / f"{name}{suffix}" for name in names]


def require_folder(folder: Path, expected: str) -> None:
    """DatasetError unless ``folder`` is a directory: what was found, ``expected``, and what its parent holds."""
    if folder.is_dir():
        return
    found = "it is a file" if folder.exists() else "it does not exist"
    try:
        siblings = sorted(p.name for p in folder.parent.iterdir())[:12]
    except OSError:
        siblings = []
    raise DatasetError(f"{describe_path(folder)}: folder not found ({found}); expected {expected}; "
                       f"its parent holds {siblings}")


def check_listed_files(
    list_path: Path, folder: Path, names: Sequence[str], suffix: str, release: str = "the data set's"
) -> list[Path]:
    """Paths ``folder/<name><suffix>``; DatasetError naming the first missing one."""
    paths = listed_paths(folder, names, suffix, release)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        hint = ""
        if any(n.endswith((".npz", ".h5")) for n in names):
            hint = " (list entries must be names without extension)"
        raise DatasetError(
            f"{describe_path(missing[0])}: file listed in {describe_path(list_path)} does not exist; "
            f"expected one file <name>{suffix} in {describe_path(folder)} per listed name{hint}; "
            f"{len(missing)} of {len(paths)} listed files are missing"
            + (f", e.g. {[p.name for p in missing[1:4]]}" if len(missing) > 1 else "")
        )
    return paths


def check_image(path: Path, image: np.ndarray, what: str) -> np.ndarray:
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise DatasetError(f"{describe_path(path)}: expected a numeric {what}, found dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.all():
        n_nan = int(np.isnan(image).sum())
        n_inf = int(image.size - finite.sum() - n_nan)
        raise DatasetError(
            f"{describe_path(path)}: expected finite intensities in the {what}, "
            f"found {n_nan} NaN and {n_inf} inf values"
        )
    return image


def check_label(path: Path, label: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    expect = f"label values must be integers in [0, {num_classes - 1}] ({num_classes} classes)"
    if np.issubdtype(label.dtype, np.bool_):
        label = label.astype(np.uint8)
    if np.issubdtype(label.dtype, np.floating):
        finite = np.isfinite(label)
        if not finite.all():
            raise DatasetError(f"{describe_path(path)}: {expect} in the {what}; found {int((~finite).sum())} NaN/inf")
        if not np.array_equal(label, np.round(label)):
            bad = np.unique(label[label != np.round(label)])[:5]
            raise DatasetError(
                f"{describe_path(path)}: {expect} in the {what}; found non-integer values {bad.tolist()}"
            )
    elif not np.issubdtype(label.dtype, np.integer):
        raise DatasetError(f"{describe_path(path)}: {expect} in the {what}; found dtype {label.dtype}")
    if label.size:
        lo, hi = label.min(), label.max()
        if lo < 0 or hi >= num_classes:
            values = np.unique(label)
            bad = values[(values < 0) | (values >= num_classes)][:8]
            raise DatasetError(
                f"{describe_path(path)}: {expect} in the {what}; found values {[int(v) for v in bad]}"
            )
    return label.astype(np.uint8 if num_classes <= 256 else np.int64, copy=False)


def load_npz_slice(path: Path, num_classes: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (H, W), label uint8 (H, W))`` of one training slice, checked."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            missing = [k for k in ("image", "label") if k not in keys]
            if missing:
                raise DatasetError(
                    f"{describe_path(path)}: expected the keys 'image' and 'label', "
                    f"missing {missing}; found keys {keys}"
                )
            image = archive["image"]
            label = archive["label"]
    except DatasetError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError, ...
        raise DatasetError(
            f"{describe_path(path)}: could not be read as a NumPy .npz archive with arrays 'image' and 'label' "
            f"({type(err).__name__}: {err})"
        ) from err
    if image.ndim != 2:
        raise DatasetError(f"{describe_path(path)}: expected a 2-D image (H, W), found shape {image.shape}")
    if label.shape != image.shape:
        raise DatasetError(
            f"{describe_path(path)}: expected the label to have the image's shape {image.shape}, "
            f"found label shape {label.shape}"
        )
    image = check_image(path, image, "image")
    label = check_label(path, label, num_classes, "label")
    return image, label


def open_h5(path: Path) -> h5py.File:
    """``path`` opened read-only; DatasetError naming it if it is not a readable HDF5 file."""
    try:
        return h5py.File(path, "r")
    except Exception as err:
        raise DatasetError(
            f"{describe_path(path)}: could not be opened as an HDF5 file with datasets 'image' and 'label' "
            f"({type(err).__name__}: {err})"
        ) from err


def h5_image_label(path: Path, f: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset]:
    """The ``image`` and ``label`` datasets of an open volume file, both ``(D, H, W)`` (not read yet)."""
    keys = sorted(f.keys())
    missing = [k for k in ("image", "label") if k not in keys or not isinstance(f[k], h5py.Dataset)]
    if missing:
        raise DatasetError(
            f"{describe_path(path)}: expected the datasets 'image' and 'label', missing {missing}; found keys {keys}"
        )
    image, label = f["image"], f["label"]
    if image.ndim != 3:
        raise DatasetError(
            f"{describe_path(path)}: expected a 3-D image volume (slices, H, W), found shape {image.shape}"
        )
    if label.shape != image.shape:
        raise DatasetError(
            f"{describe_path(path)}: expected the label to have the image's shape {image.shape}, "
            f"found label shape {label.shape}"
        )
    return image, label


def h5_volume_shape(path: Path) -> tuple[int, int, int]:
    """Shape ``(D, H, W)`` of a test volume, checking keys and shapes (not the values)."""
    with open_h5(path) as f:
        image, _ = h5_image_label(path, f)
        return tuple(int(s) for s in image.shape)  # type: ignore[return-value]


def load_h5_volume(
    path: Path, num_classes: int = 9, slice_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label uint8)`` of a whole volume ``(D, H, W)`` or of one slice ``(H, W)``, checked."""
    with open_h5(path) as f:
        image_ds, label_ds = h5_image_label(path, f)
        try:
            if slice_index is None:
                image, label = image_ds[()], label_ds[()]
            else:
                image, label = image_ds[slice_index], label_ds[slice_index]
        except Exception as err:
            raise DatasetError(
                f"{describe_path(path)}: could not read the arrays ({type(err).__name__}: {err})"
            ) from err
    where = "volume" if slice_index is None else f"slice {slice_index}"
    image = check_image(path, np.asarray(image), f"image ({where})")
    label = check_label(path, np.asarray(label), num_classes, f"label ({where})")
    return image, label
