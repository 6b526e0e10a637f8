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
* The DataLoaders share :func:`datamodules.sampling.loader_kwargs`: an own
  generator (the global torch RNG is never consumed), seeded workers (the official
  ``worker_init_fn`` takes two arguments and crashes with ``num_workers > 0``) and
  no persistent workers (they would carry process state across epochs).

Bad data raises :class:`~datamodules.errors.DatasetError` naming the file:
existence (root, folders, list files, every listed file) is checked in
``setup()``, contents (keys, dimensions, shapes, label range, NaN/inf) when an
item is loaded. Nothing is silently skipped. Before that, ``setup()`` checks every
file the stage reads (``data_check``, :mod:`datamodules.checks`) and raises one
:class:`~datamodules.checks.DataCheckError` listing every broken file.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .checked import CheckedDataModule, check_loader_arguments
from .checks import DataFile
from .errors import DatasetError, describe_path, resolve_data_root
from .files import check_listed_files, h5_volume_shape, listed_paths, load_h5_volume, load_npz_slice, read_list_file
from .loading import SeededLoaders
from .synapse_layout import (
    H5_SUFFIX,
    LIST_DIR,
    NPZ_SUFFIX,
    SYNAPSE_CLASS_NAMES,
    SYNAPSE_ENV_VAR,
    TEST_DIR,
    TEST_LIST,
    TRAIN_DIR,
    TRAIN_LIST,
)
from .synthetic import SyntheticSynapse
from .transforms import ResizeBackend, item_seed, reseed, resize_transform, synapse_train_transform

__all__ = [
    "SYNAPSE_CLASS_NAMES",
    "SYNAPSE_ENV_VAR",
    "SynapseDataModule",
    "SynapseTrainDataset",
    "SynapseSliceDataset",
    "SynapseVolumeDataset",
]

_LIST_HINT = (
    "The list files come from the TransUNet repository (lists/lists_Synapse: train.txt, test_vol.txt); "
    "copy them to <data root>/lists_Synapse/ or pass list_dir=<folder that contains them>"
)
_RELEASE = "the TransUNet release's"


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


# ----------------------------------------------------------------------------- datamodule


class SynapseDataModule(SeededLoaders, CheckedDataModule, L.LightningDataModule):
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
        synthetic: instead of reading ``data_dir``, generate the synthetic stand-in in
            the same format (:class:`~datamodules.synthetic.SyntheticSynapse`: case
            counts, size, seed, cache folder) on first use and read that. In a config:
            ``synthetic: {num_train_cases: 4, size: 128}``.
        data_check: before the datasets are built, ``setup()`` checks every file of the
            stage (:meth:`check_data`): ``"full"`` reads every array (the default: Synapse
            takes seconds per GB, and unchanged files are skipped on later runs),
            ``"fast"`` reads only the headers, ``"off"`` leaves it to the per-item checks.

    The training DataLoader keeps the last, incomplete batch and shuffles, as the
    official code (``shuffle=True``, ``drop_last=False``): 93 iterations per epoch
    for 2211 slices at batch 24.
    """

    env_var: str = SYNAPSE_ENV_VAR

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
        synthetic: SyntheticSynapse | None = None,
        data_check: Literal["off", "fast", "full"] = "full",
    ):
        super().__init__()
        check_loader_arguments(
            positive={"img_size": img_size, "batch_size": batch_size},
            non_negative={"num_workers": num_workers, "seed": seed, "val_volumes": val_volumes},
            data_dir=data_dir, synthetic=synthetic, data_check=data_check)
        if max_train_slices is not None and max_train_slices < 1:
            raise ValueError(f"max_train_slices must be None or positive, got {max_train_slices}")
        if resize_backend not in ("scipy", "opencv"):
            raise ValueError(f"resize_backend must be 'scipy' or 'opencv', got {resize_backend!r}")
        self.save_hyperparameters()
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
        self.synthetic = synthetic
        self.data_check = data_check
        self.train_dataset: SynapseTrainDataset | None = None
        self.val_dataset: SynapseSliceDataset | None = None
        self.test_dataset: SynapseVolumeDataset | None = None
        self.root: Path | None = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

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
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.ensure()

    def resolve_root(self) -> Path:
        """The data root, checked to exist (synthetic stand-in, else argument, else the environment variable)."""
        if self.synthetic is not None:
            return self.synthetic.ensure()
        expect = (f"a folder containing {TRAIN_DIR}/ and {TEST_DIR}/ (and {LIST_DIR}/) from the TransUNet release")
        return resolve_data_root(self.data_dir, self.env_var, "Synapse", expect)

    def resolve_list_dir(self, root: Path) -> Path:
        return Path(self.list_dir).expanduser() if self.list_dir is not None else root / LIST_DIR

    def train_paths(self, root: Path) -> list[Path]:
        list_path = self.resolve_list_dir(root) / TRAIN_LIST
        names = read_list_file(
            list_path, "training slice names without extension (e.g. case0005_slice000)", _LIST_HINT
        )
        if self.max_train_slices is not None:
            names = names[: self.max_train_slices]
        return check_listed_files(list_path, root / TRAIN_DIR, names, NPZ_SUFFIX, _RELEASE)

    def test_paths(self, root: Path, limit: int | None = None) -> list[Path]:
        list_path = self.resolve_list_dir(root) / TEST_LIST
        names = read_list_file(list_path, "test volume names without extension (e.g. case0008)", _LIST_HINT)
        if limit is not None:
            if limit > len(names):
                raise DatasetError(
                    f"{describe_path(list_path)}: val_volumes={limit} asks for more volumes than the "
                    f"{len(names)} listed; expected val_volumes <= {len(names)}"
                )
            names = names[:limit]
        return check_listed_files(list_path, root / TEST_DIR, names, H5_SUFFIX, _RELEASE)

    # -- whole-set check --------------------------------------------------------------------
    def data_files(self, stage: str | None, root: Path) -> list[DataFile]:
        """The files ``stage`` reads (``None``: every stage): slices for fit, volumes for validate/test."""
        list_dir = self.resolve_list_dir(root)
        files: list[DataFile] = []
        if stage in (None, "fit"):
            names = read_list_file(
                list_dir / TRAIN_LIST, "training slice names without extension (e.g. case0005_slice000)", _LIST_HINT
            )
            if self.max_train_slices is not None:
                names = names[: self.max_train_slices]
            files += [DataFile(p, 2, list_dir / TRAIN_LIST)
                      for p in listed_paths(root / TRAIN_DIR, names, NPZ_SUFFIX, _RELEASE)]
        volumes = stage in (None, "test", "predict") or (stage in ("fit", "validate") and self.val_volumes > 0)
        if volumes:
            limit = None if stage in (None, "test", "predict") else self.val_volumes
            names = read_list_file(list_dir / TEST_LIST, "test volume names without extension (e.g. case0008)",
                                   _LIST_HINT)
            if limit is not None and limit > len(names):
                self.test_paths(root, limit=limit)  # raises the val_volumes error
            files += [DataFile(p, 3, list_dir / TEST_LIST)
                      for p in listed_paths(root / TEST_DIR, names[:limit], H5_SUFFIX, _RELEASE)]
        return files

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        root = self.resolve_root()
        self.root = root
        if self.data_check != "off":
            self.check_data(stage, self.data_check)
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

    def val_dataloader(self) -> DataLoader | list:
        """Monitoring only (no validation in the official recipe); ``[]`` when ``val_volumes == 0``."""
        if self.val_volumes == 0:
            return []
        dataset = self._require(self.val_dataset, "validate")
        return self._loader(dataset, self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        dataset = self._require(self.test_dataset, "test")
        return self._loader(dataset, 1, shuffle=False)  # one whole volume per batch

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
