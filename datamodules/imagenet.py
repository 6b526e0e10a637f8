"""ImageNet-1K (ILSVRC 2012) in the class-folder layout of the Swin codebase SLAB trains with (spec §4).

Layout, under ``data_dir`` or ``$IMAGENET_DATA_DIR``::

    <root>/train/<wnid>/*.JPEG      1,281,167 images, 1000 folders
    <root>/val/<wnid>/*.JPEG        50,000 images (the evaluation set; also the "test" split here)

ImageFolder semantics: the classes are the sorted folder names of ``train/`` (index =
position), files are walked recursively in sorted order, and only ``.jpg`` / ``.jpeg`` /
``.png`` names (any case) count; ``val/`` uses the train index, and a ``val/`` folder
train lacks is an error naming it, as is an empty class folder.

Batches (``S = img_size``)::

    train     {"image": float32 (B, 3, S, S) normalised with ImageNet's mean/std, "label": int64 (B,)}
    val/test  the same plus "case": list[str], the file's path relative to the root ("val/<wnid>/<file>")

Transforms (the release's ``build_transform``): training is timm's ``create_transform``
(random-resized crop 0.08–1, bicubic; horizontal flip; RandAugment ``rand-m9-mstd0.5-inc1``,
which makes timm skip the 0.4 colour jitter; random erasing p 0.25, per-pixel noise, one box);
evaluation resizes the shorter side to ``int(S / crop_ratio)`` (256 for 224, bicubic, PIL)
and centre-crops S. Mixup / CutMix / label smoothing are the task module's
(:class:`~lightning_modules.classification.ClassificationModule`): they need the class count
and the loss, and act on whole batches on the device. Not followed: the release's S ≤ 32
branch (CIFAR-style RandomCrop with padding 4, no resize at evaluation); every size gets the
ImageNet transforms. Training drops the last incomplete batch, as the release does (and
Mixup needs even batches).

Determinism: the training sampler (:class:`~datamodules.sampling.EpochShuffleSampler`)
yields ``(epoch, index)`` and each item's transform runs with Python's ``random``, NumPy's
global RNG and torch's CPU generator seeded from ``item_seed(seed, epoch, index)``, the
previous states restored afterwards (:func:`isolated_rng`; timm's crop, flip, RandAugment
and erasing draw from exactly these), so batches depend only on ``(seed, epoch, step)``
for any ``num_workers``, and resuming inside an epoch replays them. Not deterministic across
versions of timm, torchvision or Pillow (other draws or resampling code), and the release's
own streams (seeded by rank) are not reproduced.

Bad data: ``setup()`` checks every image of the stage first (``data_check``: ``"fast"`` by
default, JPEG/PNG headers and completeness; ``"full"`` decodes each with PIL; cached) and
raises one :class:`~datamodules.checks.DataCheckError` listing every broken file.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from .checked import CheckedDataModule, check_loader_arguments
from .checks import DataFile
from .errors import DatasetError, describe_path, resolve_data_root
from .loading import SeededLoaders
from .synthetic_folders import SyntheticFolders
from .transforms import item_seed

__all__ = ["ImageNetDataModule", "ClassFolderTrainDataset", "ClassFolderEvalDataset", "imagenet_eval_transform",
           "imagenet_train_transform", "isolated_rng", "load_rgb", "scan_class_folders", "IMAGE_SUFFIXES"]

ENV_VAR = "IMAGENET_DATA_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, NumPy's global RNG and torch's CPU generator; restore them on exit."""
    states = random.getstate(), np.random.get_state(), torch.random.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.default_generator.set_state(states[2])


def imagenet_train_transform(img_size: int, *, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                             re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1,
                             color_jitter: float | None = 0.4, interpolation: str = "bicubic"):
    """timm's training pipeline, PIL image → float32 ``(3, S, S)`` (normalised), the release's arguments."""
    from timm.data import create_transform
    from timm.data.auto_augment import RandAugment

    pipeline = create_transform(img_size, is_training=True, color_jitter=color_jitter, auto_augment=auto_augment,
                                re_prob=re_prob, re_mode=re_mode, re_count=re_count, interpolation=interpolation,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for step in pipeline.transforms:
        for op in getattr(step, "ops", ()) if isinstance(step, RandAugment) else ():
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return pipeline


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize with Pillow < 11's meaning of 0 bits (a black image; Pillow 11+ raises).

    RandAugment ``PosterizeIncreasing`` keeps 0 bits at magnitude 10, which ``mstd0.5``
    reaches around m9.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size, 0)
    return ImageOps.posterize(img, int(bits_to_keep))


def imagenet_eval_transform(img_size: int, crop_ratio: float = 224 / 256) -> T.Compose:
    """Shorter side → ``int(S / crop_ratio)`` (bicubic), centre crop S, normalise: ``(3, S, S)`` float32."""
    resize = int((1.0 / crop_ratio) * img_size)  # the release: int((256 / 224) * IMG_SIZE)
    return T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(img_size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_rgb(path: Path) -> Image.Image:
    """The image at ``path`` decoded and converted to RGB; :class:`DatasetError` naming it otherwise."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as err:
        raise DatasetError(f"{describe_path(path)}: expected a JPEG or PNG image that PIL decodes; found "
                           f"{type(err).__name__}: {err}") from err


def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [Path(dirpath) / n for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        found = "is a file" if split_dir.exists() else "does not exist"
        raise DatasetError(f"{describe_path(split_dir)}: split folder {found}; expected one sub-folder per class "
                           f"(<wnid>/*.JPEG) inside the data root {describe_path(split_dir.parent)}")
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not names:
        raise DatasetError(f"{describe_path(split_dir)}: no class folders; expected one sub-folder per class")
    return names


def scan_class_folders(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(classes, [(path, class index), ...])`` of one split (ImageFolder order).

    ``classes``: the class index to use (the training split's); a folder not in it is an error.
    """
    folders = _class_folders(split_dir)
    classes = folders if classes is None else classes
    index = {name: i for i, name in enumerate(classes)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DatasetError(f"{describe_path(split_dir / unknown[0])}: class folder not in the training split's "
                           f"{len(classes)} classes; expected the same <wnid> folders as train/"
                           + (f" ({len(unknown)} such folders, also {unknown[1:4]})" if len(unknown) > 1 else ""))
    samples: list[tuple[Path, int]] = []
    for name in folders:
        files = _image_files(split_dir / name)
        if not files:
            raise DatasetError(f"{describe_path(split_dir / name)}: class folder without images; expected "
                               f"*{', *'.join(IMAGE_SUFFIXES)} files (any case)")
        samples += [(path, index[name]) for path in files]
    return classes, samples


class _ClassFolderImages(Dataset):
    def __init__(self, root: Path, samples: list[tuple[Path, int]], transform):
        self.root, self.samples, self.transform = Path(root), list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)


class ClassFolderTrainDataset(_ClassFolderImages):
    """``dataset[(epoch, index)]`` (or ``[index]`` at ``self.epoch``) → ``{"image": (3, S, S), "label": int64 ()}``."""

    def __init__(self, root: Path, samples: list[tuple[Path, int]], transform, *, seed: int = 0):
        super().__init__(root, samples, transform)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (self.epoch, int(item))
        path, label = self.samples[index]
        image = load_rgb(path)
        with isolated_rng(item_seed(self.seed, epoch, index)):
            tensor = self.transform(image)
        return {"image": tensor, "label": torch.tensor(label, dtype=torch.int64)}


class ClassFolderEvalDataset(_ClassFolderImages):
    """``dataset[index]`` → ``{"image": (3, S, S), "label": int64 (), "case": "<split>/<wnid>/<file>"}``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        return {"image": self.transform(load_rgb(path)), "label": torch.tensor(label, dtype=torch.int64),
                "case": path.relative_to(self.root).as_posix()}


class ImageNetDataModule(SeededLoaders, CheckedDataModule, L.LightningDataModule):
    """ImageNet-1K class folders (module docstring).

    Args:
        data_dir: root with ``train/`` and ``val/``; ``None`` reads ``$IMAGENET_DATA_DIR``.
        img_size: crop side S (224).
        batch_size: per device (128 in the release, × 8 GPUs).
        eval_batch_size: validation / test batch per device (``None``: ``batch_size``).
        num_workers: DataLoader workers; any value gives the same batches.
        seed: shuffling and augmentation seed (linked from ``seed_everything``; the release: 0).
        num_classes: if given, must equal the number of class folders (1000).
        train_split, val_split, test_split: folder names (ImageNet tests on ``val``).
        augment: timm's training transforms (else the evaluation transform for training too).
        auto_augment, re_prob, re_mode, re_count, color_jitter, interpolation: timm's
            ``create_transform`` arguments (the release's values).
        crop_ratio: evaluation crop / resize (224/256).
        synthetic: read a generated stand-in in the same layout instead of ``data_dir``
            (:class:`~datamodules.synthetic_folders.SyntheticFolders`).
        data_check: ``"fast"`` (headers), ``"full"`` (decode every image) or ``"off"``.
    """

    drop_last_train = True  # the release drops the last incomplete batch (timm's Mixup needs even batches)


    def __init__(
        self,
        data_dir: str | None = None,
        img_size: int = 224,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        seed: int = 0,
        num_classes: int | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        augment: bool = True,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        color_jitter: float | None = 0.4,
        interpolation: str = "bicubic",
        crop_ratio: float = 224 / 256,
        synthetic: SyntheticFolders | None = None,
        data_check: Literal["off", "fast", "full"] = "fast",
    ):
        super().__init__()
        check_loader_arguments(
            positive={"img_size": img_size, "batch_size": batch_size, "eval_batch_size": eval_batch_size},
            non_negative={"num_workers": num_workers, "seed": seed},
            data_dir=data_dir, synthetic=synthetic, data_check=data_check)
        if not 0.0 < crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must lie in (0, 1], got {crop_ratio}")
        self.save_hyperparameters(ignore=["num_classes"])  # the task's num_classes is the one logged
        self.data_dir, self.img_size, self.batch_size = data_dir, int(img_size), int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers, self.seed, self.augment = int(num_workers), int(seed), bool(augment)
        self.expected_classes = num_classes
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.crop_ratio, self.synthetic, self.data_check = float(crop_ratio), synthetic, data_check
        self.root: Path | None = None
        self._classes: list[str] | None = None
        self._samples: dict[str, list[tuple[Path, int]]] = {}
        self.train_dataset: ClassFolderTrainDataset | None = None
        self.val_dataset: ClassFolderEvalDataset | None = None
        self.test_dataset: ClassFolderEvalDataset | None = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The wnids, in class-index order (the training split's sorted folder names)."""
        if self._classes is None:
            root = self.resolve_root()
            classes = _class_folders(root / self.splits["train"])
            if self.expected_classes is not None and len(classes) != int(self.expected_classes):
                raise DatasetError(f"{describe_path(root / self.splits['train'])}: {len(classes)} class folders; "
                                   f"expected num_classes={self.expected_classes}")
            self._classes = classes
        return tuple(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- paths ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.ensure(self.img_size)

    def resolve_root(self) -> Path:
        """The data root, checked to be a folder (its splits are checked when read)."""
        if self.synthetic is not None:
            return self.synthetic.ensure(self.img_size)
        expect = "a folder containing train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageNet class folders)"
        return resolve_data_root(self.data_dir, ENV_VAR, "ImageNet", expect)

    def samples(self, split: str) -> list[tuple[Path, int]]:
        """``[(path, class index)]`` of ``"train"``, ``"val"`` or ``"test"`` (scanned once)."""
        folder = self.splits[split]
        if folder not in self._samples:
            root = self.resolve_root()
            self._samples[folder] = scan_class_folders(root / folder, list(self.class_names))[1]
        return self._samples[folder]

    # -- whole-set check --------------------------------------------------------------------
    def data_files(self, stage: str | None, root: Path) -> list[DataFile]:
        """Every image ``stage`` reads (``None``: every split), each once."""
        files: dict[Path, DataFile] = {}
        for split in _STAGE_SPLITS.get(stage, ("train", "val", "test")):
            for path, _ in self.samples(split):
                files.setdefault(path, DataFile(path, 3, content="class_image"))
        return list(files.values())

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.root = root = self.resolve_root()
        if self.data_check != "off":
            self.check_data(stage, self.data_check)
        splits = _STAGE_SPLITS.get(stage, ("train", "val", "test"))
        evaluation = imagenet_eval_transform(self.img_size, self.crop_ratio)
        if "train" in splits:
            hp = self.hparams
            transform = imagenet_train_transform(
                self.img_size, auto_augment=hp.auto_augment, re_prob=hp.re_prob, re_mode=hp.re_mode,
                re_count=hp.re_count, color_jitter=hp.color_jitter, interpolation=hp.interpolation,
            ) if self.augment else evaluation
            self.train_dataset = ClassFolderTrainDataset(root, self.samples("train"), transform, seed=self.seed)
        if "val" in splits:
            self.val_dataset = ClassFolderEvalDataset(root, self.samples("val"), evaluation)
        if "test" in splits:
            self.test_dataset = ClassFolderEvalDataset(root, self.samples("test"), evaluation)

    def train_dataloader(self) -> DataLoader:
        """Shuffled per ``(seed, epoch)``, the last incomplete batch dropped; resumes skip trained batches."""
        dataset = self._require(self.train_dataset, "fit")
        if len(dataset) < self.batch_size:
            raise DatasetError(f"{describe_path(dataset.root / self.splits['train'])}: {len(dataset)} training "
                               f"images, fewer than one batch of {self.batch_size} (the last incomplete batch "
                               "is dropped); lower data.init_args.batch_size")
        return self._train_loader(dataset)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return self._loader(dataset, self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require(self.val_dataset, "validate"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require(self.test_dataset, "test"))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
