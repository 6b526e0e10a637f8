"""Check a whole data set before training: every listed file, and one report of all broken ones.

The per-item readers of :mod:`datamodules.files` stop at the first bad item, possibly
hours into a run. :func:`check_files` verifies every file a stage will read before
the first step and raises one :class:`DataCheckError` listing **every** broken file,
one line each (file: what was expected; what was found)::

    3 broken files in /data/Synapse (full check of 2223 files):
      /data/Synapse/train_npz/case0005_slice012.npz: expected label values in 0..8 (9 classes); found [9, 12]
      /data/Synapse/train_npz/case0006_slice000.npz: expected a NumPy .npz archive (zip) with arrays ...; found ...
      /data/Synapse/test_vol_h5/case0001.npy.h5: expected the datasets 'image' and 'label'; found keys ['image']

Files are ``.npz`` archives or HDF5 files (``.h5``, ``.hdf5``) holding arrays ``image``
and ``label`` of equal shape and the rank given per file (:class:`DataFile`: 2 for a
slice, 3 for a volume), or PNG files holding one image or one label each (the
ConvFormer release's ``img/`` and ``label/`` folders; :class:`DataFile` gives the
channels through ``ndim``, 2 for grayscale and 3 for RGB, the expected ``size`` and
whether label values above 1 mean 1, ``fold_labels``), or photos in class folders
(ImageNet's ``<root>/train/<wnid>/*.JPEG``; :class:`DataFile` ``content="class_image"``):
a JPEG or PNG of any size and colour mode, told apart by its first bytes, not its name
(:mod:`datamodules.image_headers`). Two levels:

``fast``
    the file exists, is not empty, and its headers say the right thing, without
    reading the arrays: the zip directory of an ``.npz`` lists ``image.npy`` and
    ``label.npy``, whose ``.npy`` headers give shapes and dtypes (and whose sizes
    match them); an HDF5 file opens and has the two datasets with the right
    shapes, dtypes and (contiguous layout) storage inside the file. A PNG starts with
    the PNG signature, its IHDR header gives 8 bits per sample, the expected colour
    type (grayscale, RGB) and size, and it ends with its IEND chunk (not truncated).
    A class-folder image is a JPEG (SOI, a frame header with its size, an EOI marker
    near the end) or a PNG (signature, valid IHDR, IEND), of positive size.
``full``
    ``fast``, then every array is read (HDF5 volumes in slabs of slices, zip CRCs
    verified): finite float image, integer-valued label in ``0..num_classes-1``. A
    PNG is decoded (OpenCV); a label PNG has values in ``0..num_classes-1`` unless
    ``fold_labels`` (then every value is valid: values above 1 count as 1). A
    class-folder image is decoded by PIL (what the loader uses) and converted to RGB;
    its decoded size must be its header's.

Results are cached per file under ``<cache dir>/data_checks/<hash of the data root>.json``
(cache dir: :func:`datamodules.synthetic.default_cache_dir`, i.e. ``$REPRO_CACHE_DIR``
or ``~/.cache/repro-seg``), keyed by absolute path, size, ``mtime_ns``, level and
number of classes; a ``full`` result also serves a ``fast`` request. Only files that
passed are cached, so a broken file is checked again every time; a file modified
within :data:`RACY_SECONDS` before it was checked is checked again too (its mtime
cannot tell a later same-size rewrite apart). The cache is written atomically.

Files are checked by a small thread pool (``workers``; reading and NumPy's reductions
release the GIL). A tqdm progress bar goes to stderr on rank 0 only.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from .errors import DatasetError, describe_path

__all__ = [
    "CHECK_LEVELS",
    "CheckLevel",
    "CheckReport",
    "DataCheckError",
    "DataFile",
    "FileProblem",
    "cache_path",
    "check_file",
    "check_files",
    "default_workers",
    "is_rank_zero",
]

CheckLevel = Literal["fast", "full"]
CHECK_LEVELS: tuple[str, ...] = ("fast", "full")
_LEVEL_RANK = {"fast": 1, "full": 2}
CACHE_VERSION = 1
CACHE_SUBDIR = "data_checks"
#: A file modified less than this before its check is checked again next time.
RACY_SECONDS = 2.0
#: HDF5 volumes are read in slabs of about this many bytes.
SLAB_BYTES = 64 << 20
_KEYS = ("image", "label")
_H5_SUFFIXES = (".h5", ".hdf5")
_CLASS_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DataFile:
    """One file to check: ``image`` and ``label`` arrays of rank ``ndim`` (2: slice, 3: volume).

    ``listed_in`` (the list file that names it) is quoted when the file is missing.

    A ``.png`` holds one array, ``content`` ``"image"`` or ``"label"``, of shape ``(H, W)``
    (``ndim`` 2, grayscale) or ``(H, W, 3)`` (``ndim`` 3, RGB; labels are always 2); ``size``
    is the expected ``(H, W)`` (``None``: any); ``fold_labels``: label values above 1
    count as 1 (the ConvFormer release's rule for 2-class data), so every value is valid.
    """

    path: Path
    ndim: int
    listed_in: Path | None = None
    content: Literal["image+label", "image", "label", "class_image"] = "image+label"
    size: tuple[int, int] | None = None
    fold_labels: bool = False

    def __post_init__(self) -> None:
        if self.content == "class_image":
            if not self.path.name.lower().endswith(_CLASS_IMAGE_SUFFIXES):
                raise ValueError(f"{self.path}: a class-folder image must be named *.jpg, *.jpeg or *.png "
                                 "(any case)")
        elif self.path.name.lower().endswith(".png") and self.content not in ("image", "label"):
            raise ValueError(f"{self.path}: a PNG holds one array: content must be 'image' or 'label', "
                             f"got {self.content!r}")

    @property
    def format(self) -> str:
        if self.content == "class_image":
            return "class_image"
        name = self.path.name.lower()
        if name.endswith(".npz"):
            return "npz"
        if name.endswith(_H5_SUFFIXES):
            return "h5"
        if name.endswith(".png"):
            return "png"
        raise ValueError(f"{self.path}: unknown data file format (expected .npz, .h5, .hdf5 or .png)")

    def expectation(self) -> str | None:
        """What a PNG must be beyond ``ndim`` (part of its cache key); ``None`` for array files."""
        if self.format == "class_image":
            return "class_image"
        if self.format != "png":
            return None
        size = "any" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return f"{self.content}/{size}/{'fold' if self.fold_labels else 'index'}"


@dataclass(frozen=True)
class FileProblem:
    """What is wrong with one file: what was expected, what was found."""

    path: Path
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{describe_path(self.path)}: expected {self.expected}; found {self.found}"


class DataCheckError(DatasetError):
    """Some files of a data set are broken; the message lists every one (first line: a summary).

    ``problems`` holds the :class:`FileProblem` s. Constructible from the message alone,
    so a DataLoader worker can re-raise it.
    """

    def __init__(self, message: str, problems: Sequence[FileProblem] = ()):
        super().__init__(message)
        self.problems: tuple[FileProblem, ...] = tuple(problems)

    @property
    def broken_files(self) -> list[Path]:
        return list(dict.fromkeys(p.path for p in self.problems))


@dataclass
class CheckReport:
    """Outcome of :func:`check_files`."""

    root: Path
    level: str
    num_files: int
    num_bytes: int
    num_read: int  # checked now (the rest came from the cache)
    seconds: float
    problems: list[FileProblem] = field(default_factory=list)
    cache_file: Path | None = None

    @property
    def num_cached(self) -> int:
        return self.num_files - self.num_read

    @property
    def broken_files(self) -> list[Path]:
        return list(dict.fromkeys(p.path for p in self.problems))

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what was checked and how it went."""
        n_broken = len(self.broken_files)
        state = "all OK" if self.ok else f"{n_broken} broken"
        return (
            f"data check ({self.level}): {self.num_files} files, {self.num_bytes / 1e9:.2f} GB in "
            f"{describe_path(self.root)}: {state} ({self.num_read} checked, {self.num_cached} skipped as "
            f"unchanged since an earlier check) in {self.seconds:.1f} s"
        )

    def message(self) -> str:
        """The multi-line error message: a summary line, then one line per problem."""
        n = len(self.broken_files)
        head = (
            f"{n} broken file{'s' if n != 1 else ''} in {describe_path(self.root)} "
            f"({self.level} check of {self.num_files} files):"
        )
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def raise_if_broken(self) -> CheckReport:
        if self.problems:
            raise DataCheckError(self.message(), self.problems)
        return self


# ----------------------------------------------------------------------------- one file


def check_file(file: DataFile, level: str = "full", num_classes: int = 9) -> list[FileProblem]:
    """Every problem found in one file (empty: the file is fine). Never raises for bad data."""
    path = file.path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        where = f"the file listed in {describe_path(file.listed_in)}" if file.listed_in else "this file"
        return [FileProblem(path, where, "no such file")]
    except OSError as err:
        return [FileProblem(path, "a readable file", f"{type(err).__name__}: {err}")]
    if not os.path.isfile(path):
        return [FileProblem(path, f"a {file.format} file", "a folder or other non-regular file")]
    if st.st_size == 0:
        return [FileProblem(path, f"a non-empty {_FORMAT_NAMES[file.format]}", "an empty file (0 bytes)")]
    try:
        if file.format == "npz":
            return _check_npz(file, st.st_size, level, num_classes)
        if file.format == "png":
            return _check_png(file, st.st_size, level, num_classes)
        if file.format == "class_image":
            return _check_class_image(file, level)
        return _check_h5(file, st.st_size, level, num_classes)
    except Exception as err:  # a reader failing in a way not foreseen below is still a broken file
        return [FileProblem(path, f"a readable {_FORMAT_NAMES[file.format]}", f"{type(err).__name__}: {err}")]


_FORMAT_NAMES = {
    "npz": "NumPy .npz archive (zip) with arrays 'image' and 'label'",
    "h5": "HDF5 file with datasets 'image' and 'label'",
    "png": "PNG file",
    "class_image": "JPEG or PNG image",
}


def _check_header(
    path: Path, ndim: int, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype]
) -> list[FileProblem]:
    """Rank, equal shapes, non-empty, dtypes: what the headers alone tell."""
    problems = []
    image_shape, label_shape = shapes["image"], shapes["label"]
    what = {2: "a 2-D image (H, W)", 3: "a 3-D image volume (slices, H, W)"}.get(ndim, f"a {ndim}-D image")
    if len(image_shape) != ndim:
        problems.append(FileProblem(path, what, f"image shape {image_shape}"))
    if label_shape != image_shape:
        problems.append(FileProblem(path, f"the label to have the image's shape {image_shape}",
                                    f"label shape {label_shape}"))
    elif len(image_shape) == ndim and 0 in image_shape:
        problems.append(FileProblem(path, "non-empty arrays", f"shape {image_shape}"))
    image_dtype, label_dtype = dtypes["image"], dtypes["label"]
    if image_dtype.kind != "f":
        problems.append(FileProblem(path, "a floating-point image", f"dtype {image_dtype}"))
    if label_dtype.kind not in "biuf":
        problems.append(FileProblem(path, "an integer-valued label (integer, bool or float dtype)",
                                    f"dtype {label_dtype}"))
    return problems


class _Values:
    """Value statistics of one file's image and label, accumulated over slabs."""

    def __init__(self, path: Path, num_classes: int):
        self.path = path
        self.num_classes = num_classes
        self.n_nan = self.n_inf = 0
        self.bad_labels: set[float] = set()
        self.n_bad_labels = 0
        self.fractional: set[float] = set()
        self.label_nonfinite = 0

    def add(self, image: np.ndarray, label: np.ndarray) -> None:
        if image.size:
            lo, hi = image.min(), image.max()  # NaN propagates through min/max: no temporary arrays
            if not (np.isfinite(lo) and np.isfinite(hi)):
                nan = int(np.count_nonzero(np.isnan(image)))
                self.n_nan += nan
                self.n_inf += int(image.size - np.count_nonzero(np.isfinite(image)) - nan)
        if not label.size or label.dtype.kind == "b":
            return
        lo, hi = label.min(), label.max()
        if label.dtype.kind == "f":
            if not (np.isfinite(lo) and np.isfinite(hi)):
                finite = np.isfinite(label)
                self.label_nonfinite += int(label.size - np.count_nonzero(finite))
                label = label[finite]
                if not label.size:
                    return
                lo, hi = label.min(), label.max()
            rounded = np.rint(label)
            off = rounded != label
            if off.any():
                self.fractional.update(np.unique(label[off])[:5].tolist())
        if lo < 0 or hi >= self.num_classes:
            outside = (label < 0) | (label >= self.num_classes)
            self.n_bad_labels += int(np.count_nonzero(outside))
            self.bad_labels.update(np.unique(label[outside])[:8].tolist())

    def problems(self) -> list[FileProblem]:
        out = []
        if self.n_nan or self.n_inf:
            out.append(FileProblem(self.path, "finite image intensities",
                                   f"{self.n_nan} NaN and {self.n_inf} inf values"))
        if self.label_nonfinite:
            out.append(FileProblem(self.path, "finite label values", f"{self.label_nonfinite} NaN/inf values"))
        if self.fractional:
            values = [_number(v) for v in sorted(self.fractional)[:5]]
            out.append(FileProblem(self.path, "integer label values", f"non-integer values {values}"))
        if self.bad_labels:
            values = [_number(v) for v in sorted(self.bad_labels)[:8]]
            out.append(FileProblem(
                self.path, f"label values in 0..{self.num_classes - 1} ({self.num_classes} classes)",
                f"values {values} in {self.n_bad_labels} pixels"))
        return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _npy_header(fp) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header length)`` of the ``.npy`` stream ``fp`` (positioned at its start)."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:
        shape, _, dtype = fmt._read_array_header(fp, version)  # (3, 0): no public reader
    return tuple(int(s) for s in shape), np.dtype(dtype), fp.tell()


def _check_npz(file: DataFile, size: int, level: str, num_classes: int) -> list[FileProblem]:
    path = file.path
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return [FileProblem(path, f"a {_FORMAT_NAMES['npz']}",
                            f"a file that is not a readable zip archive ({type(err).__name__}: {err}; truncated?)")]
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        keys = sorted(name[:-4] if name.endswith(".npy") else name for name in infos)
        missing = [k for k in _KEYS if f"{k}.npy" not in infos]
        if missing:
            return [FileProblem(path, "the keys 'image' and 'label'", f"keys {keys} (missing {missing})")]
        shapes, dtypes = {}, {}
        problems: list[FileProblem] = []
        for key in _KEYS:
            info = infos[f"{key}.npy"]
            if info.header_offset + info.compress_size > size:
                return [FileProblem(path, f"the zip member {key}.npy inside the file",
                                    f"it ends past the end of the file ({size} bytes)")]
            with archive.open(info) as fp:
                try:
                    shape, dtype, header = _npy_header(fp)
                except ValueError as err:
                    return [FileProblem(path, f"a .npy array header for {key!r}", f"{err}")]
            if dtype.hasobject:
                return [FileProblem(path, f"a numeric {key} array", f"dtype {dtype} (Python objects)")]
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.file_size - header != expected:
                problems.append(FileProblem(
                    path, f"{expected} bytes of {key} data for shape {shape} {dtype}",
                    f"{info.file_size - header} bytes in {key}.npy"))
            shapes[key], dtypes[key] = shape, dtype
        problems += _check_header(path, file.ndim, shapes, dtypes)
        if problems or level == "fast":
            return problems
        arrays = {}
        for key in _KEYS:
            try:
                with archive.open(infos[f"{key}.npy"]) as fp:  # CRC-32 verified at the member's end
                    arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
            except Exception as err:
                return [FileProblem(path, f"a readable {key} array", f"{type(err).__name__}: {err}")]
    values = _Values(path, num_classes)
    values.add(arrays["image"], arrays["label"])
    return values.problems()


def _check_h5(file: DataFile, size: int, level: str, num_classes: int) -> list[FileProblem]:
    path = file.path
    try:
        f = h5py.File(path, "r")
    except Exception as err:
        return [FileProblem(path, f"a {_FORMAT_NAMES['h5']}",
                            f"a file HDF5 cannot open ({type(err).__name__}: {err})")]
    with f:
        keys = sorted(f.keys())
        missing = [k for k in _KEYS if k not in f or not isinstance(f[k], h5py.Dataset)]
        if missing:
            return [FileProblem(path, "the datasets 'image' and 'label'", f"keys {keys} (missing {missing})")]
        datasets = {k: f[k] for k in _KEYS}
        problems = _check_header(path, file.ndim, {k: tuple(d.shape) for k, d in datasets.items()},
                                 {k: d.dtype for k, d in datasets.items()})
        for key, ds in datasets.items():
            if ds.chunks is not None or ds.dtype.kind not in "biuf":
                continue  # chunked storage is verified by reading it (full)
            expected = int(ds.size) * ds.dtype.itemsize
            offset, stored = ds.id.get_offset(), ds.id.get_storage_size()
            if expected and (offset is None or stored < expected):
                problems.append(FileProblem(path, f"{expected} bytes of {key} data stored",
                                            f"{0 if offset is None else stored} bytes"))
            elif offset is not None and offset + stored > size:
                problems.append(FileProblem(path, f"the {key} data (bytes {offset}..{offset + stored}) inside "
                                            "the file", f"a file of {size} bytes (truncated?)"))
        if problems or level == "fast":
            return problems
        image_ds, label_ds = datasets["image"], datasets["label"]
        depth = image_ds.shape[0]
        slice_bytes = max(1, int(np.prod(image_ds.shape[1:], dtype=np.int64)) * image_ds.dtype.itemsize)
        step = max(1, SLAB_BYTES // slice_bytes)
        if image_ds.chunks is not None:  # whole chunks per slab
            step = max(image_ds.chunks[0], step // image_ds.chunks[0] * image_ds.chunks[0])
        values = _Values(path, num_classes)
        for start in range(0, depth, step):
            stop = min(depth, start + step)
            try:
                image, label = image_ds[start:stop], label_ds[start:stop]
            except Exception as err:
                return [FileProblem(path, f"readable arrays (slices {start}..{stop - 1})",
                                    f"{type(err).__name__}: {err}")]
            values.add(image, label)
    return values.problems()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk: length 0, type, CRC
#: IHDR colour type → (name, channels)
_PNG_COLOR_TYPES = {0: ("grayscale", 1), 2: ("RGB", 3), 3: ("palette (indexed colour)", 1),
                    4: ("grayscale + alpha", 2), 6: ("RGBA", 4)}


def _png_kind(color_type: int, channels: int | None = None) -> str:
    name, n = _PNG_COLOR_TYPES.get(color_type, (f"colour type {color_type}", channels or 0))
    article = "an" if name[0] in "aeiouR" else "a"
    return f"{article} {name} ({n}-channel) PNG" if n else f"a PNG of {name}"


def _png_start(head: bytes) -> str:
    """What a file that lacks the PNG signature looks like."""
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG file (rename is not enough: convert it to PNG)"
    return f"a file starting with {head[:8]!r}, not the PNG signature"


def _check_png(file: DataFile, size: int, level: str, num_classes: int) -> list[FileProblem]:
    """One image or label PNG: signature, IHDR (8 bit, colour type, size), IEND; ``full``: decode, label values."""
    path = file.path
    with open(path, "rb") as fp:
        head = fp.read(33)  # signature (8) + IHDR chunk (4 + 4 + 13 + 4)
        fp.seek(max(0, size - len(_PNG_IEND)))
        tail = fp.read()
    if not head.startswith(_PNG_SIGNATURE):
        return [FileProblem(path, f"a PNG {file.content}", _png_start(head))]
    if len(head) < 33 or head[12:16] != b"IHDR":
        return [FileProblem(path, "a PNG whose first chunk is its IHDR header", "a file without it (truncated?)")]
    width, height, depth, color_type = struct.unpack(">IIBB", head[16:26])
    channels = 1 if file.content == "label" or file.ndim == 2 else 3
    want = 0 if channels == 1 else 2
    problems = []
    if color_type != want:
        what = "class indices" if file.content == "label" else "intensities"
        hint = " whose values OpenCV converts to gray levels, not class indices" if color_type == 3 else ""
        problems.append(FileProblem(path, f"{_png_kind(want)} {file.content} ({what})",
                                    f"{_png_kind(color_type)}{hint}"))
    if depth != 8:
        problems.append(FileProblem(path, "8 bits per sample", f"{depth} bits per sample"))
    if file.size is not None and (height, width) != tuple(file.size):
        problems.append(FileProblem(path, f"{file.size[0]}x{file.size[1]} pixels (H x W; the release never resizes)",
                                    f"{height}x{width}"))
    if tail != _PNG_IEND:
        problems.append(FileProblem(path, "a complete PNG ending with its IEND chunk",
                                    f"a file of {size} bytes that ends without it (truncated?)"))
    if problems or level == "fast":
        return problems
    import cv2

    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        return [FileProblem(path, "PNG data that decodes", "data OpenCV cannot decode (corrupt image data)")]
    expected_shape = (height, width) if channels == 1 else (height, width, channels)
    if array.shape != expected_shape or array.dtype != np.uint8:
        return [FileProblem(path, f"decoded uint8 pixels of shape {expected_shape} (as its header says)",
                            f"{array.dtype} pixels of shape {array.shape}")]
    if file.content == "label" and not file.fold_labels:
        values = _Values(path, num_classes)
        values.add(np.empty(0, np.float32), array)
        return values.problems()
    return []


def _check_class_image(file: DataFile, level: str) -> list[FileProblem]:
    """A photo in a class folder: JPEG/PNG header (size, complete); ``full``: PIL decodes it to RGB."""
    from .image_headers import ImageHeaderError, read_image_header

    path = file.path
    try:
        header = read_image_header(path)
    except ImageHeaderError as err:
        return [FileProblem(path, err.expected, err.found)]
    name = header.format.upper()
    if not header.complete:
        end = "its EOI marker (FF D9)" if header.format == "jpeg" else "its IEND chunk"
        return [FileProblem(path, f"a complete {name} file ending with {end}",
                            f"a file of {path.stat().st_size} bytes without it (truncated?)")]
    if level == "fast":
        return []
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and decompression-bomb warnings: not our concern here
            with Image.open(path) as image:
                image.load()
                rgb = image.convert("RGB")
    except Exception as err:
        return [FileProblem(path, f"{name} data that PIL decodes", f"{type(err).__name__}: {err}")]
    if rgb.size != (header.width, header.height):
        return [FileProblem(path, f"decoded pixels of {header.width}x{header.height} (W x H, as its header says)",
                            f"{rgb.size[0]}x{rgb.size[1]}")]
    return []


# ----------------------------------------------------------------------------- cache


def cache_path(root: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache_dir>/data_checks/<hash of the absolute root>.json``."""
    if cache_dir is None:
        from .synthetic import default_cache_dir

        cache_dir = default_cache_dir()
    digest = hashlib.sha256(describe_path(root).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / CACHE_SUBDIR / f"{digest}.json"


def _load_cache(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _save_cache(path: Path, root: Path, updates: dict[str, dict | None]) -> None:
    """Merge ``updates`` (``None``: forget the file) into the cache file, written atomically."""
    files = _load_cache(path)  # re-read: another process may have added entries meanwhile
    for key, entry in updates.items():
        if entry is None:
            files.pop(key, None)
        else:
            files[key] = entry
    data = {"version": CACHE_VERSION, "root": describe_path(root), "files": files}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache folder only costs speed
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _entry(st: os.stat_result, level: str, file: DataFile, num_classes: int, checked_ns: int) -> dict[str, Any]:
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "level": level, "ndim": file.ndim,
             "num_classes": num_classes, "checked_ns": checked_ns}
    if file.expectation() is not None:
        entry["expect"] = file.expectation()
    return entry


def _cache_hit(entry: dict[str, Any] | None, st: os.stat_result, level: str, file: DataFile,
               num_classes: int) -> bool:
    if not entry:
        return False
    try:
        return (
            entry["size"] == st.st_size
            and entry["mtime_ns"] == st.st_mtime_ns
            and entry["ndim"] == file.ndim
            and entry.get("expect") == file.expectation()
            and entry["num_classes"] == num_classes
            and _LEVEL_RANK.get(entry["level"], 0) >= _LEVEL_RANK[level]
            and st.st_mtime_ns < entry["checked_ns"] - int(RACY_SECONDS * 1e9)
        )
    except (KeyError, TypeError):
        return False


# ----------------------------------------------------------------------------- many files


def default_workers() -> int:
    """Threads for :func:`check_files`: the usable CPUs, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (Lightning's rank, else ``RANK`` / ``LOCAL_RANK``)."""
    try:
        from lightning.pytorch.utilities import rank_zero_only

        rank = getattr(rank_zero_only, "rank", None)
    except ImportError:
        rank = None
    if rank is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return int(rank) == 0


#: CPython 3.11's AST builder keeps its recursion depth in interpreter-wide state, so NumPy's
#: ``.npy`` header parsing (``ast.literal_eval``) in two threads at once can fail with this
#: SystemError on a good file (CPython gh-106905); such a file is checked again in one thread.
THREAD_RACE_ERROR = "AST constructor recursion depth mismatch"


def check_files(
    files: Iterable[DataFile],
    *,
    level: str = "full",
    num_classes: int = 9,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
    workers: int | None = None,
    raise_on_error: bool = True,
) -> CheckReport:
    """Check every file; raise one :class:`DataCheckError` listing all broken ones (module docstring).

    Args:
        files: the files, in the order they are reported.
        level: ``"fast"`` (headers only) or ``"full"`` (every value).
        num_classes: label values must lie in ``0..num_classes-1``.
        root: the data root named in messages and hashed for the cache file name
            (default: the files' common folder).
        cache_dir: base cache folder (default :func:`~datamodules.synthetic.default_cache_dir`).
        use_cache: ``False`` checks every file and writes no cache.
        progress: show a tqdm bar on stderr; ``None``: on rank 0 only.
        workers: threads (default :func:`default_workers`); 1 checks in this thread.
        raise_on_error: ``False`` returns the report with its problems instead of raising.
    """
    if level not in CHECK_LEVELS:
        raise ValueError(f"level must be one of {CHECK_LEVELS}, got {level!r}")
    started = time.perf_counter()
    files = list(files)
    if root is None:
        root = Path(os.path.commonpath([str(f.path.absolute()) for f in files])) if files else Path(".")
    root = Path(root)
    cache_file = cache_path(root, cache_dir) if use_cache else None
    cached = _load_cache(cache_file)
    progress = is_rank_zero() if progress is None else progress

    todo: list[tuple[int, DataFile, os.stat_result | None]] = []
    num_bytes = 0
    for i, file in enumerate(files):
        try:
            st = os.stat(file.path)
        except OSError:
            st = None
        if st is not None:
            num_bytes += st.st_size
            if _cache_hit(cached.get(describe_path(file.path)), st, level, file, num_classes):
                continue
        todo.append((i, file, st))

    checked_ns = time.time_ns()  # before reading: a file changed during its check is not "clean"

    def run(job: tuple[int, DataFile, os.stat_result | None]) -> list[FileProblem]:
        return check_file(job[1], level, num_classes)  # looked up at call time (tests count the calls)

    results: dict[int, list[FileProblem]] = {}
    bar = _progress_bar(len(files), len(files) - len(todo), level, root, enabled=progress)
    try:
        n_workers = min(workers or default_workers(), max(1, len(todo)))
        if n_workers <= 1:
            outcomes: Iterable[list[FileProblem]] = map(run, todo)
            for job, found in zip(todo, outcomes, strict=True):
                results[job[0]] = found
                bar.update(1)
        else:
            with ThreadPoolExecutor(n_workers, thread_name_prefix="data-check") as pool:
                for job, found in zip(todo, pool.map(run, todo), strict=True):
                    results[job[0]] = found
                    bar.update(1)
            for job in todo:  # a good file failed by the THREAD_RACE_ERROR race: check it again, alone
                if any(THREAD_RACE_ERROR in problem.found for problem in results[job[0]]):
                    results[job[0]] = run(job)
    finally:
        bar.close()

    problems: list[FileProblem] = []
    updates: dict[str, dict | None] = {}
    for i, file, st in todo:
        found = results[i]
        problems += found
        key = describe_path(file.path)
        if found or st is None:
            if key in cached:
                updates[key] = None
            continue
        try:
            now = os.stat(file.path)
        except OSError:
            continue
        if (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns):  # unchanged while it was read
            updates[key] = _entry(st, level, file, num_classes, checked_ns)
    if cache_file is not None and updates:
        _save_cache(cache_file, root, updates)
    report = CheckReport(root=root, level=level, num_files=len(files), num_bytes=num_bytes, num_read=len(todo),
                         seconds=time.perf_counter() - started, problems=problems, cache_file=cache_file)
    return report.raise_if_broken() if raise_on_error else report


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, done: int, level: str, root: Path, *, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="file", desc=f"Checking data ({level})", file=sys.stderr,
                dynamic_ncols=True, leave=False, postfix={"root": root.name})
