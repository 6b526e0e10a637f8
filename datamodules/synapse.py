"""Synapse multi-organ CT (TransUNet release) as a LightningDataModule.

On-disk format (the TransUNet release, the only format the CSWin-UNet / Swin-Unet
/ TransUNet code reads), under a data root given by ``data_dir`` or the
environment variable ``SYNAPSE_DATA_DIR``::

    <root>/train_npz/<case>_slice<NNN>.npz   keys image (float32 (H, W), HU clipped
                                             to [-125, 275] and scaled to [0, 1])
                                             and label (integers 0..8, (H, W))
    <root>/test_vol_h5/<case>.npy.h5         datasets image (float32 (D, H, W))
                                             and label (same shape)
    <list_dir>/train.txt                     slice names without extension
    <list_dir>/test_vol.txt                  volume names without extension

``list_dir`` defaults to ``<root>/lists_Synapse``; the lists themselves are in the
TransUNet repository (``lists/lists_Synapse``).

Batches::

    train  {"image": float32 (B, 1, S, S), "label": int64 (B, S, S)}
    val    {"image": float32 (B, 1, S, S), "label": int64 (B, S, S),
            "case": list[str], "slice": int64 (B,)}          (only if val_volumes > 0)
    test   {"image": float32 (1, D, H, W), "label": int64 (1, D, H, W),
            "case": [str]}                                   (original resolution)

with ``S = img_size``. The official recipe has **no validation**; the optional
validation set (all slices of the first ``val_volumes`` test volumes) is for
monitoring only and must not be used for model selection in a faithful run.

Determinism (see also :mod:`datamodules.transforms`):

* The training sampler (:class:`EpochShuffleSampler`) draws its permutation from
  ``torch.Generator().manual_seed(seed + epoch)`` and yields ``(epoch, index)``
  pairs, so the dataset learns the epoch with every index, in the main process
  and in every worker alike.
* The dataset reseeds the augmentation for every item from
  ``SeedSequence([seed, epoch, index])``. The augmentation of item ``i`` in epoch
  ``e`` is therefore a pure function of ``(seed, e, i)``, independent of
  ``num_workers``, of which worker loads it and of the history of the process;
  the order of an epoch is a pure function of ``(seed, e)``.
* The epoch comes from ``set_epoch``, which Lightning calls on the sampler before
  every training epoch; when a trainer is attached, ``train_dataloader()`` also
  starts the sampler at the epoch the fit loop is about to run, because Lightning creates the
  first iterator (and, with workers, prefetches its first batches) *before* it
  calls ``set_epoch``; without this, a run resumed at epoch ``e`` would replay
  epoch 0's order for those prefetched batches.
* The DataLoader gets its own ``torch.Generator`` (used only to draw the workers'
  base seed), so iterating it never consumes the global torch RNG that model
  initialisation and dropout use, with any ``num_workers``.
* ``worker_init_fn`` (:func:`seed_worker`) seeds ``random`` and ``numpy`` in every
  worker from torch's per-worker seed, for anything else random. (The official
  ``worker_init_fn`` takes two arguments and crashes with ``num_workers > 0``.)
* ``persistent_workers`` is not used: persistent workers keep their process
  state (global RNG streams, anything cached on the dataset copy) from one epoch
  to the next, so an epoch would depend on the history of the run rather than
  on ``(seed, epoch)`` alone, and a run resumed from a checkpoint could not
  reproduce it. Fresh workers per epoch cost a fork per epoch, which is cheap.

Bad data raises :class:`~datamodules.errors.DatasetError` naming the file:
existence (root, folders, list files, every listed file) is checked in
``setup()``, contents (keys, dimensions, shapes, label range, NaN/inf) when an
item is loaded. Nothing is silently skipped.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import DatasetError, describe_path
from .transforms import ResizeBackend, item_seed, reseed, resize_transform, synapse_train_transform

__all__ = [
    "SYNAPSE_CLASS_NAMES",
    "SYNAPSE_ENV_VAR",
    "SynapseDataModule",
    "SynapseTrainDataset",
    "SynapseSliceDataset",
    "SynapseVolumeDataset",
    "EpochShuffleSampler",
    "seed_worker",
    "read_list_file",
    "load_npz_slice",
    "load_h5_volume",
]

SYNAPSE_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aorta",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)
SYNAPSE_ENV_VAR = "SYNAPSE_DATA_DIR"
TRAIN_DIR = "train_npz"
TEST_DIR = "test_vol_h5"
LIST_DIR = "lists_Synapse"
TRAIN_LIST = "train.txt"
TEST_LIST = "test_vol.txt"
NPZ_SUFFIX = ".npz"
H5_SUFFIX = ".npy.h5"
_LIST_HINT = (
    "The list files come from the TransUNet repository (lists/lists_Synapse: train.txt, test_vol.txt); "
    "copy them to <data root>/lists_Synapse/ or pass list_dir=<folder that contains them>"
)


# ----------------------------------------------------------------------------- file checks


def read_list_file(path: Path, what: str) -> list[str]:
    """Names listed in ``path``, one per line (blank lines ignored). ``what`` says what a line names."""
    if not path.is_file():
        reason = "is a folder, not a file" if path.exists() else "not found"
        raise DatasetError(f"{describe_path(path)}: list file {reason}; expected a text file of {what}. {_LIST_HINT}.")
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


def _check_listed_files(list_path: Path, folder: Path, names: Sequence[str], suffix: str) -> list[Path]:
    """Paths ``folder/<name><suffix>``; DatasetError naming the first missing one."""
    if not folder.is_dir():
        found = "it is a file" if folder.exists() else "it does not exist"
        try:
            siblings = sorted(p.name for p in folder.parent.iterdir())[:12]
        except OSError:
            siblings = []
        raise DatasetError(
            f"{describe_path(folder)}: folder not found ({found}); expected the TransUNet release's "
            f"'{folder.name}/' folder of *{suffix} files inside the data root {describe_path(folder.parent)}, "
            f"which contains {siblings}"
        )
    paths = [folder / f"{name}{suffix}" for name in names]
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


def _check_image(path: Path, image: np.ndarray, what: str) -> np.ndarray:
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


def _check_label(path: Path, label: np.ndarray, num_classes: int, what: str) -> np.ndarray:
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
    image = _check_image(path, image, "image")
    label = _check_label(path, label, num_classes, "label")
    return image, label


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except Exception as err:
        raise DatasetError(
            f"{describe_path(path)}: could not be opened as an HDF5 file with datasets 'image' and 'label' "
            f"({type(err).__name__}: {err})"
        ) from err


def _h5_datasets(path: Path, f: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset]:
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
    with _open_h5(path) as f:
        image, _ = _h5_datasets(path, f)
        return tuple(int(s) for s in image.shape)  # type: ignore[return-value]


def load_h5_volume(
    path: Path, num_classes: int = 9, slice_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label uint8)`` of a whole volume ``(D, H, W)`` or of one slice ``(H, W)``, checked."""
    with _open_h5(path) as f:
        image_ds, label_ds = _h5_datasets(path, f)
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
    image = _check_image(path, np.asarray(image), f"image ({where})")
    label = _check_label(path, np.asarray(label), num_classes, f"label ({where})")
    return image, label


# ----------------------------------------------------------------------------- datasets


class SynapseTrainDataset(Dataset):
    """Training slices ``<root>/train_npz/<name>.npz``, augmented and resized.

    ``dataset[(epoch, index)]`` (what :class:`EpochShuffleSampler` yields) or
    ``dataset[index]`` (uses ``self.epoch``) returns
    ``{"image": float32 (1, S, S), "label": int64 (S, S)}``. With a transform,
    the item's augmentation is seeded by ``item_seed(seed, epoch, index)``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        transform: A.BaseCompose | None,
        *,
        seed: int = 1234,
        num_classes: int = 9,
    ):
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.seed = int(seed)
        self.num_classes = num_classes
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        if isinstance(item, (tuple, list)):
            epoch, index = int(item[0]), int(item[1])
        else:
            epoch, index = self.epoch, int(item)
        path = self.paths[index]
        image, label = load_npz_slice(path, self.num_classes)
        if self.transform is not None:
            reseed(self.transform, item_seed(self.seed, epoch, index))
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0),
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
        }


class SynapseSliceDataset(Dataset):
    """All slices of some test volumes, resized (no augmentation): monitoring only.

    Item: ``{"image": float32 (1, S, S), "label": int64 (S, S), "case": str, "slice": int}``.
    The volumes' keys and shapes are checked at construction (to count slices).
    """

    def __init__(self, paths: Sequence[Path], transform: A.BaseCompose | None, *, num_classes: int = 9):
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.num_classes = num_classes
        self.items: list[tuple[int, int]] = []
        for v, path in enumerate(self.paths):
            depth = h5_volume_shape(path)[0]
            self.items.extend((v, z) for z in range(depth))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, z = self.items[index]
        path = self.paths[v]
        image, label = load_h5_volume(path, self.num_classes, slice_index=z)
        if self.transform is not None:
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0),
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
            "case": _case_name(path),
            "slice": z,
        }


class SynapseVolumeDataset(Dataset):
    """Whole test volumes at original resolution.

    Item: ``{"image": float32 (D, H, W), "label": int64 (D, H, W), "case": str}``.
    """

    def __init__(self, paths: Sequence[Path], *, num_classes: int = 9):
        self.paths = [Path(p) for p in paths]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image, label = load_h5_volume(path, self.num_classes)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "case": _case_name(path),
        }


def _case_name(path: Path) -> str:
    name = path.name
    return name[: -len(H5_SUFFIX)] if name.endswith(H5_SUFFIX) else path.stem


# ----------------------------------------------------------------------------- sampling


class EpochShuffleSampler(Sampler):
    """Shuffles with ``torch.Generator().manual_seed(seed + epoch)``; yields ``(epoch, index)``.

    The order of epoch ``e`` is a pure function of ``(seed, e)``. Lightning calls
    :meth:`set_epoch` before each training epoch (also through its
    ``DistributedSamplerWrapper`` under DDP). ``dataset``, if given, is told the
    epoch too, for code that indexes it with plain integers.
    """

    def __init__(
        self, num_items: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, dataset: Any = None
    ):
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.dataset = dataset
        self.epoch = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def permutation(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else int(epoch)
        if not self.shuffle:
            return list(range(self.num_items))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.permutation(epoch)])

    def __len__(self) -> int:
        return self.num_items


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and ``numpy`` from torch's per-worker seed.

    Torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from
    the DataLoader's generator); the augmentation itself is reseeded per item
    and does not depend on this.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    try:  # OpenCV's own thread pool is pointless (and fork-unsafe) inside a worker
        import cv2

        cv2.setNumThreads(0)
    except Exception:  # pragma: no cover - cv2 is a hard dependency, be lenient anyway
        pass


# ----------------------------------------------------------------------------- datamodule


class SynapseDataModule(L.LightningDataModule):
    """Synapse multi-organ CT, TransUNet release format (module docstring).

    Args:
        data_dir: data root with ``train_npz/`` and ``test_vol_h5/``; ``None`` reads
            the environment variable ``SYNAPSE_DATA_DIR``.
        list_dir: folder with ``train.txt`` and ``test_vol.txt``; default
            ``<data_dir>/lists_Synapse``.
        img_size: side ``S`` of the training / validation slices (224 in the paper).
        batch_size: training and validation batch size (24 in the paper). Test
            batches are always one whole volume.
        num_workers: DataLoader workers; any value gives the same batches.
        augment: the official rot-flip / rotation augmentation (training only).
        seed: seeds the shuffling and the augmentation (1234 in the official code).
        val_volumes: monitoring only; validate on all slices of the first
            ``val_volumes`` test volumes (the official recipe has no validation,
            and 0 disables it).
        max_train_slices: use only the first N names of ``train.txt`` (quick runs).
        resize_backend: ``"scipy"`` (the official ``ndimage.zoom``) or ``"opencv"``
            (faster, not bit-faithful); see :mod:`datamodules.transforms`.

    The training DataLoader keeps the last, incomplete batch and shuffles, as the
    official code (``shuffle=True``, ``drop_last=False``): 93 iterations per epoch
    for 2211 slices at batch 24.
    """

    is_synthetic: bool = False
    env_var: str = SYNAPSE_ENV_VAR
    _hparams_ignore: tuple[str, ...] = ()

    def __init__(
        self,
        data_dir: str | None = None,
        list_dir: str | None = None,
        img_size: int = 224,
        batch_size: int = 24,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 1234,
        val_volumes: int = 0,
        max_train_slices: int | None = None,
        resize_backend: ResizeBackend = "scipy",
    ):
        super().__init__()
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if val_volumes < 0:
            raise ValueError(f"val_volumes must be >= 0, got {val_volumes}")
        if max_train_slices is not None and max_train_slices < 1:
            raise ValueError(f"max_train_slices must be None or positive, got {max_train_slices}")
        if resize_backend not in ("scipy", "opencv"):
            raise ValueError(f"resize_backend must be 'scipy' or 'opencv', got {resize_backend!r}")
        self.save_hyperparameters(ignore=list(self._hparams_ignore))
        self.data_dir = data_dir
        self.list_dir = list_dir
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.val_volumes = int(val_volumes)
        self.max_train_slices = max_train_slices
        self.resize_backend = resize_backend
        self.train_dataset: SynapseTrainDataset | None = None
        self.val_dataset: SynapseSliceDataset | None = None
        self.test_dataset: SynapseVolumeDataset | None = None
        self.root: Path | None = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(SYNAPSE_CLASS_NAMES)

    @property
    def class_names(self) -> tuple[str, ...]:
        return SYNAPSE_CLASS_NAMES

    @property
    def spatial_dims(self) -> int:
        return 2

    # -- paths ---------------------------------------------------------------------------
    def resolve_root(self) -> Path:
        """The data root, checked to exist (argument first, then the environment variable)."""
        if self.data_dir is not None:
            root, source = Path(self.data_dir).expanduser(), "the data_dir argument"
        else:
            value = os.environ.get(self.env_var, "").strip()
            if not value:
                raise DatasetError(
                    f"No Synapse data root: data_dir was not given and the environment variable {self.env_var} "
                    f"is not set; expected a folder containing {TRAIN_DIR}/ and {TEST_DIR}/ "
                    f"(and {LIST_DIR}/) from the TransUNet release"
                )
            root, source = Path(value).expanduser(), f"the environment variable {self.env_var}"
        if not root.is_dir():
            found = "is a file" if root.exists() else "does not exist"
            raise DatasetError(
                f"{describe_path(root)}: Synapse data root (from {source}) {found}; expected a folder "
                f"containing {TRAIN_DIR}/ and {TEST_DIR}/ from the TransUNet release"
            )
        return root

    def resolve_list_dir(self, root: Path) -> Path:
        return Path(self.list_dir).expanduser() if self.list_dir is not None else root / LIST_DIR

    def train_paths(self, root: Path) -> list[Path]:
        list_path = self.resolve_list_dir(root) / TRAIN_LIST
        names = read_list_file(list_path, "training slice names without extension (e.g. case0005_slice000)")
        if self.max_train_slices is not None:
            names = names[: self.max_train_slices]
        return _check_listed_files(list_path, root / TRAIN_DIR, names, NPZ_SUFFIX)

    def test_paths(self, root: Path, limit: int | None = None) -> list[Path]:
        list_path = self.resolve_list_dir(root) / TEST_LIST
        names = read_list_file(list_path, "test volume names without extension (e.g. case0008)")
        if limit is not None:
            if limit > len(names):
                raise DatasetError(
                    f"{describe_path(list_path)}: val_volumes={limit} asks for more volumes than the "
                    f"{len(names)} listed; expected val_volumes <= {len(names)}"
                )
            names = names[:limit]
        return _check_listed_files(list_path, root / TEST_DIR, names, H5_SUFFIX)

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        root = self.resolve_root()
        self.root = root
        if stage in (None, "fit"):
            make = synapse_train_transform if self.augment else resize_transform
            transform = make(self.img_size, resize_backend=self.resize_backend)
            self.train_dataset = SynapseTrainDataset(
                self.train_paths(root), transform, seed=self.seed, num_classes=self.num_classes
            )
        if stage in (None, "fit", "validate") and self.val_volumes > 0:
            self.val_dataset = SynapseSliceDataset(
                self.test_paths(root, limit=self.val_volumes),
                resize_transform(self.img_size, resize_backend=self.resize_backend),
                num_classes=self.num_classes,
            )
        if stage in (None, "test", "predict"):
            self.test_dataset = SynapseVolumeDataset(self.test_paths(root), num_classes=self.num_classes)

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "worker_init_fn": seed_worker,
            # own generator: drawing the workers' base seed must not consume the global torch RNG
            "generator": torch.Generator().manual_seed(self.seed),
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": False,  # see the module docstring
        }

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        if dataset is None:
            self.setup(stage)
            dataset = {"fit": self.train_dataset, "validate": self.val_dataset, "test": self.test_dataset}[stage]
        assert dataset is not None
        return dataset

    def _start_epoch(self) -> int:
        """The epoch Lightning is about to run: the value it later passes to ``set_epoch``.

        ``epoch_progress.current.processed`` (not ``current_epoch``, which counts
        *completed* epochs and lags by one when resuming from a checkpoint saved in
        ``on_train_epoch_end``).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        try:
            return int(trainer.fit_loop.epoch_progress.current.processed)
        except AttributeError:  # pragma: no cover - other Lightning versions
            return int(trainer.current_epoch)

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_dataset, "fit")
        sampler = EpochShuffleSampler(len(dataset), seed=self.seed, epoch=self._start_epoch(), dataset=dataset)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=False, **self._loader_kwargs()
        )

    def val_dataloader(self) -> DataLoader | list:
        """Monitoring only (no validation in the official recipe); ``[]`` when ``val_volumes == 0``."""
        if self.val_volumes == 0:
            return []
        dataset = self._require(self.val_dataset, "validate")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, drop_last=False, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        dataset = self._require(self.test_dataset, "test")
        return DataLoader(dataset, batch_size=1, shuffle=False, drop_last=False, **self._loader_kwargs())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
