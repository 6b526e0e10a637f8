"""LOL, LOL-v2-real and LOL-v2-synthetic low-/normal-light pairs in their release layouts (GLARE, ECCV 2024).

Layouts and pairing rules: :mod:`datamodules.lol_layout` (``shared/papers/glare.md`` §4.1),
chosen by ``dataset`` (``"lol"``, ``"lol_v2_real"``, ``"lol_v2_synthetic"``), under a data root
given by ``data_dir`` or the environment variable (``LOL_DATA_DIR``, ``LOLV2_DATA_DIR``).

Reading (the release's ``LoL_Dataset``): OpenCV ``imread`` (3-channel BGR) → RGB, float32
in [0, 1] (``/255``). Batches::

    train     {"image": float32 (B, 3, c, c) low-light, "target": float32 (B, 3, c, c) normal-light,
               "case": list[str]}   c = crop_size
    val/test  the same with the whole images, batch ``eval_batch_size`` (1, as the release)

Training augmentation, ``train_augment`` (the two released training loaders, GLARE @ 7ea5027,
``code/data/LoL_dataset.py``):

``"crop_flip"`` (Stage III, ``train_stage3.py`` → ``LoL_Dataset``; default)
    a random ``crop_size`` crop at the same place in both images (the whole side where
    the image is not larger than ``crop_size``), then a horizontal flip with probability 1/2.
``"resize_crop_flip"`` (Stage II, ``train_stage2.py`` → ``LoL_Dataset_RIDCP``, ``use_resize_crop``)
    both images resized by one random factor with OpenCV bicubic interpolation: the
    shorter side becomes an integer ``s`` drawn uniformly from ``crop_size .. shorter side``
    (or ``crop_size + 1`` when the image is not larger than the crop); then the crop and
    the flip. As released, the normal-light image is resized as float32 (bicubic
    overshoot is **not** clipped, values may leave [0, 1] slightly) and the low-light
    image as uint8 (saturated, rounded).
``"none"``
    the whole training images.

``rotate`` adds the release's ``use_rot`` rotations (off in both released configs): for
``crop_flip`` a rotation by 0, 90 or 270 degrees (``LoL_Dataset``'s choice of three), for
``resize_crop_flip`` a vertical flip and a transpose, each with probability 1/2 (BasicSR's
``augment``). Stage configs: Stage II crop 320, batch 4; Stage III crop 256, batch 2 (§3).

``log_low`` applies the release's input transform ``log(clamp(x + 1e-3, min=1e-3))`` to the
low-light image in the loader, as the release does (``log_low: true`` in its configs); off
by default (the images stay in [0, 1] and the network applies it).

Model selection (spec §4.3, §6 item 2): the release validates and selects on the **test**
set (eval15 for LOL); that is the faithful default, ``select_on="test"``, and
:attr:`LowLightPairsDataModule.selection_note` says so. ``select_on="holdout"`` validates on
a held-out ``val_fraction`` of the training pairs instead (removed from training).

Determinism: the training sampler yields ``(epoch, index)`` and each item's augmentation is
drawn from ``default_rng(item_seed(seed, epoch, index))``, so batches depend only on
``(seed, epoch, step)``, for any ``num_workers``; the last incomplete training batch is
dropped, as the release's loader does.

Bad data: ``setup()`` checks every file of the stage first (``data_check``: each file a PNG,
8 bit, RGB, not truncated, decodable; every low-light file has its normal-light partner
and vice versa; the two images of a pair have the same size) and raises one
:class:`~datamodules.checks.DataCheckError` listing every broken file; missing roots and
folders raise :class:`~datamodules.errors.DatasetError`; the per-item reader checks again.

Deviations from the release: pairs in sorted key order (LOL: ``os.listdir`` order there);
LOL-v2 paired by key instead of position in the sorted listings (equal on intact data);
images are read per item instead of all at the start; the release's histogram-equalised
copy of the input (``concat_histeq``/``histeq_as_input``, off in GLARE's configs) is not built.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .checked import CheckedDataModule, check_loader_arguments
from .checks import CheckReport, DataFile, FileProblem
from .errors import DatasetError, describe_path, resolve_data_root
from .image_headers import ImageHeaderError, read_image_header
from .loading import SeededLoaders
from .lol_layout import LowLightPair, get_layout, read_rgb
from .synthetic_lol import SyntheticLowLight
from .transforms import item_seed

__all__ = [
    "LowLightPairsDataModule",
    "LowLightPairsDataset",
    "TRAIN_AUGMENTS",
    "crop_flip",
    "resize_crop_flip",
    "log_low_transform",
]

TrainAugment = Literal["crop_flip", "resize_crop_flip", "none"]
TRAIN_AUGMENTS: tuple[str, ...] = ("crop_flip", "resize_crop_flip", "none")
#: The splits each Lightning stage reads (any other stage, e.g. ``None``: both).
_STAGE_SPLITS = {"fit": ("train", "test"), "validate": ("train", "test"), "test": ("test",), "predict": ("test",)}


def log_low_transform(x: torch.Tensor) -> torch.Tensor:
    """The release's low-light input transform ``log(clamp(x + 1e-3, min=1e-3))`` (``log_low: true``)."""
    return torch.log(torch.clamp(x + 1e-3, min=1e-3))


def _crop_at(images: Sequence[np.ndarray], top: int, left: int, size: int) -> list[np.ndarray]:
    return [im[top:top + size, left:left + size] for im in images]


def crop_flip(low: np.ndarray, high: np.ndarray, crop_size: int, rng: np.random.Generator,
              rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stage III's ``LoL_Dataset``: the same random crop of both ``(H, W, 3)`` images, a horizontal flip (p 1/2).

    Where a side is not larger than ``crop_size`` the crop starts at 0 and keeps the whole
    side. ``rotate``: then a rotation by k·90° with k drawn from (0, 1, 3).
    """
    h, w = low.shape[:2]
    top = int(rng.integers(0, h - crop_size + 1)) if h > crop_size else 0
    left = int(rng.integers(0, w - crop_size + 1)) if w > crop_size else 0
    low, high = _crop_at((low, high), top, left, crop_size)
    if rng.random() < 0.5:
        low, high = low[:, ::-1], high[:, ::-1]
    if rotate:
        k = int(rng.choice((0, 1, 3)))
        low, high = np.rot90(low, k, axes=(0, 1)), np.rot90(high, k, axes=(0, 1))
    return np.ascontiguousarray(low), np.ascontiguousarray(high)


def resize_crop_flip(low: np.ndarray, high: np.ndarray, crop_size: int, rng: np.random.Generator,
                     rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stage II's ``LoL_Dataset_RIDCP``: random bicubic resize, the same random crop, flips (module docstring).

    ``low``: uint8 ``(H, W, 3)``; ``high``: float32 ``(H, W, 3)`` in [0, 1] (resized as
    float, not clipped, as released). Returns the two ``crop_size`` patches, same dtypes.
    """
    shorter = min(high.shape[:2])
    if shorter > crop_size:
        factor = int(rng.integers(crop_size, shorter + 1)) / shorter
    else:
        factor = (crop_size + 1) / shorter
    high = cv2.resize(high, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    low = cv2.resize(low, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    h, w = low.shape[:2]
    top, left = int(rng.integers(0, h - crop_size + 1)), int(rng.integers(0, w - crop_size + 1))
    low, high = _crop_at((low, high), top, left, crop_size)
    hflip = rng.random() < 0.5
    vflip = rotate and rng.random() < 0.5
    transpose = rotate and rng.random() < 0.5
    if hflip:
        low, high = low[:, ::-1], high[:, ::-1]
    if vflip:
        low, high = low[::-1], high[::-1]
    if transpose:
        low, high = low.transpose(1, 0, 2), high.transpose(1, 0, 2)
    return np.ascontiguousarray(low), np.ascontiguousarray(high)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 (→ /255) or float32 → float32 ``(3, H, W)``."""
    array = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class LowLightPairsDataset(Dataset):
    """Pairs read from disk: ``dataset[(epoch, index)]`` (or ``[index]`` at ``self.epoch``).

    Item: ``{"image": float32 (3, H, W) low-light, "target": float32 (3, H, W), "case": key}``;
    ``augment`` one of :data:`TRAIN_AUGMENTS` (``"none"`` for evaluation), seeded per item
    by ``item_seed(seed, epoch, index)``.
    """

    def __init__(self, pairs: Sequence[LowLightPair], *, augment: str = "none", crop_size: int = 256,
                 rotate: bool = False, seed: int = 10, log_low: bool = False):
        if augment not in TRAIN_AUGMENTS:
            raise ValueError(f"augment must be one of {TRAIN_AUGMENTS}, got {augment!r}")
        self.pairs = list(pairs)
        self.augment = augment
        self.crop_size = int(crop_size)
        self.rotate = bool(rotate)
        self.seed = int(seed)
        self.log_low = bool(log_low)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` uint8 ``(H, W, 3)`` RGB of pair ``index``, checked to have the same size."""
        pair = self.pairs[index]
        low, high = read_rgb(pair.low), read_rgb(pair.high)
        if low.shape != high.shape:
            raise DatasetError(f"{describe_path(pair.high)}: expected the size of its low-light partner "
                               f"{describe_path(pair.low)} ({low.shape[0]}x{low.shape[1]}, H x W); found "
                               f"{high.shape[0]}x{high.shape[1]}")
        return low, high

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (self.epoch, int(item))
        low, high = self.load(index)
        if self.augment != "none":
            rng = np.random.default_rng(item_seed(self.seed, epoch, index))
            if self.augment == "resize_crop_flip":
                low, high = resize_crop_flip(low, high.astype(np.float32) / 255.0, self.crop_size, rng, self.rotate)
            else:
                low, high = crop_flip(low, high, self.crop_size, rng, self.rotate)
        image = _to_tensor(low)
        return {"image": log_low_transform(image) if self.log_low else image, "target": _to_tensor(high),
                "case": self.pairs[index].key}


class LowLightPairsDataModule(SeededLoaders, CheckedDataModule, L.LightningDataModule):
    """LOL / LOL-v2-real / LOL-v2-synthetic pairs (module docstring).

    Args:
        dataset: ``"lol"``, ``"lol_v2_real"`` or ``"lol_v2_synthetic"``.
        data_dir: the release folder (``LOLdataset`` with ``our485/``, ``eval15/``; ``LOL-v2`` with
            ``Real_captured/``, ``Synthetic/``); ``None`` reads ``LOL_DATA_DIR`` / ``LOLV2_DATA_DIR``.
        crop_size: training crop side (Stage II 320, Stage III 256).
        train_augment: ``"crop_flip"`` (Stage III), ``"resize_crop_flip"`` (Stage II) or ``"none"``.
        rotate: the release's ``use_rot`` rotations (off in its configs).
        batch_size: training batch (Stage II 4, Stage III 2).
        eval_batch_size: validation / test batch (1, as the release; images may differ in size).
        num_workers: DataLoader workers; any value gives the same batches.
        seed: shuffling and augmentation seed (10 in the release; linked from ``seed_everything``).
        log_low: apply the release's log transform to the low-light input in the loader.
        select_on: ``"test"`` (the release: validate on the test set) or ``"holdout"``.
        val_fraction: the held-out fraction of the training pairs for ``select_on="holdout"``.
        holdout_seed: seeds which pairs are held out.
        synthetic: read a generated stand-in in the same layout instead of ``data_dir``
            (:class:`~datamodules.synthetic_lol.SyntheticLowLight`; ``synthetic: {num_train: 8}``).
        data_check: ``"full"`` (decode every PNG), ``"fast"`` (headers only) or ``"off"``.
    """

    #: the release's training loader drops the last incomplete batch
    drop_last_train = True
    #: no labels: the data check's label rules do not apply
    num_classes = 0

    def __init__(
        self,
        dataset: Literal["lol", "lol_v2_real", "lol_v2_synthetic"] = "lol",
        data_dir: str | None = None,
        crop_size: int = 256,
        train_augment: TrainAugment = "crop_flip",
        rotate: bool = False,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 10,
        log_low: bool = False,
        select_on: Literal["test", "holdout"] = "test",
        val_fraction: float = 0.1,
        holdout_seed: int = 0,
        synthetic: SyntheticLowLight | None = None,
        data_check: Literal["off", "fast", "full"] = "full",
    ):
        super().__init__()
        self.layout = get_layout(dataset)
        check_loader_arguments(
            positive={"crop_size": crop_size, "batch_size": batch_size, "eval_batch_size": eval_batch_size},
            non_negative={"num_workers": num_workers, "seed": seed, "holdout_seed": holdout_seed},
            data_dir=data_dir, synthetic=synthetic, data_check=data_check)
        if train_augment not in TRAIN_AUGMENTS:
            raise ValueError(f"train_augment must be one of {TRAIN_AUGMENTS}, got {train_augment!r}")
        if select_on not in ("test", "holdout"):
            raise ValueError(f"select_on must be 'test' or 'holdout', got {select_on!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.crop_size = int(crop_size)
        self.train_augment = train_augment
        self.rotate = bool(rotate)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.log_low = bool(log_low)
        self.select_on = select_on
        self.val_fraction = float(val_fraction)
        self.holdout_seed = int(holdout_seed)
        self.synthetic = synthetic
        self.data_check = data_check
        self.train_dataset: LowLightPairsDataset | None = None
        self.val_dataset: LowLightPairsDataset | None = None
        self.test_dataset: LowLightPairsDataset | None = None
        self.root: Path | None = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    @property
    def selection_note(self) -> str:
        """Which pairs models are selected on, and whether that is the release's choice."""
        if self.select_on == "test":
            return (f"model selection on the {self.layout.title} test split '{self.layout.split_dir('test')}' "
                    "(the release's choice: selected on the test set)")
        return (f"model selection on {self.val_fraction:.0%} of the training pairs held out (seed "
                f"{self.holdout_seed}; not the release's choice)")

    # -- paths ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.ensure(self.dataset)

    def resolve_root(self) -> Path:
        if self.synthetic is not None:
            return self.synthetic.ensure(self.dataset)
        layout = self.layout
        folders = ", ".join(f"{d}/" for _, d in layout.split_dirs)
        where = f"{layout.subset}/ (or that folder itself) with {folders}" if layout.subset else folders
        expect = f"a folder containing {where} (the {layout.title} release layout)"
        return resolve_data_root(self.data_dir, layout.env_var, layout.title, expect)

    def split_pairs(self, root: Path) -> dict[str, list[LowLightPair]]:
        """``{"train", "val", "test"}`` pairs (``val``: the test pairs, or the held-out training pairs)."""
        train = self.layout.scan(root, "train")[0]
        test = self.layout.scan(root, "test")[0]
        if self.select_on == "test":
            return {"train": train, "val": test, "test": test}
        n_val = min(len(train) - 1, max(1, round(self.val_fraction * len(train))))
        if n_val < 1:
            raise DatasetError(f"{describe_path(root)}: select_on='holdout' needs at least 2 training pairs; "
                               f"found {len(train)}")
        held = set(np.random.default_rng(self.holdout_seed).permutation(len(train))[:n_val].tolist())
        return {"train": [p for i, p in enumerate(train) if i not in held],
                "val": [p for i, p in enumerate(train) if i in held], "test": test}

    # -- whole-set check --------------------------------------------------------------------
    def _stage_splits(self, stage: str | None) -> tuple[str, ...]:
        return _STAGE_SPLITS.get(stage, ("train", "test"))

    def data_files(self, stage: str | None, root: Path) -> list[DataFile]:
        """Every image of the pairs ``stage`` reads (``None``: both splits), each once."""
        files: dict[Path, DataFile] = {}
        for split in self._stage_splits(stage):
            for pair in self.layout.scan(root, split)[0]:
                for path in (pair.low, pair.high):
                    files.setdefault(path, DataFile(path, 3, content="image"))
        return list(files.values())

    def cross_file_problems(self, stage: str | None, root: Path, report: CheckReport) -> list[FileProblem]:
        """Files without a partner, and pairs whose two images differ in size (by their headers)."""
        broken = set(report.broken_files)
        problems: list[FileProblem] = []
        for split in self._stage_splits(stage):
            pairs, lone_low, lone_high = self.layout.scan(root, split)
            low_dir, high_dir = self.layout.folders(root, split)
            for path, other in [(p, high_dir) for p in lone_low] + [(p, low_dir) for p in lone_high]:
                problems.append(FileProblem(path, f"its partner in {describe_path(other)} (paired by name"
                                            + (f" after the prefixes '{self.layout.low_prefix}' / "
                                               f"'{self.layout.high_prefix}')" if self.layout.low_prefix else ")"),
                                            "none"))
            for pair in pairs:
                if pair.low in broken or pair.high in broken:
                    continue
                try:
                    low, high = read_image_header(pair.low), read_image_header(pair.high)
                except (ImageHeaderError, OSError):
                    continue  # reported by the per-file check
                if (low.height, low.width) != (high.height, high.width):
                    problems.append(FileProblem(
                        pair.high, f"the size of its low-light partner {describe_path(pair.low)} "
                        f"({low.height}x{low.width}, H x W)", f"{high.height}x{high.width}"))
        return problems

    # -- Lightning hooks -------------------------------------------------------------------
    def _dataset(self, pairs: Sequence[LowLightPair], augment: str) -> LowLightPairsDataset:
        return LowLightPairsDataset(pairs, augment=augment, crop_size=self.crop_size, rotate=self.rotate,
                                    seed=self.seed, log_low=self.log_low)

    def setup(self, stage: str | None = None) -> None:
        root = self.resolve_root()
        self.root = root
        if self.data_check != "off":
            self.check_data(stage, self.data_check)
        splits = self.split_pairs(root)
        if stage in (None, "fit"):
            self.train_dataset = self._dataset(splits["train"], self.train_augment)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._dataset(splits["val"], "none")
        if stage in (None, "test", "predict"):
            self.test_dataset = self._dataset(splits["test"], "none")

    def val_dataloader(self) -> DataLoader:
        """The model-selection pairs (:attr:`selection_note`), in key order."""
        return self._loader(self._require(self.val_dataset, "validate"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_dataset, "test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

