"""ACDC and ISIC 2018 in the ConvFormer release's PNG layout, as one LightningDataModule with presets.

Layout (:mod:`datamodules.png_layout`; ``shared/papers/convformer.md`` §4.1), under a
data root given by ``data_dir`` or the preset's environment variable
(``ACDC_DATA_DIR``, ``ISIC2018_DATA_DIR``)::

    <root>/img/<id>.png   <root>/label/<id>.png   <root>/MainPatient/<split>.txt

=============  ========  =========================  ==========================================  =========
preset         channels  classes                    splits (train / val / test)                 eval unit
=============  ========  =========================  ==========================================  =========
``acdc``       1 (gray)  background, RV, Myo, LV    trainofficial / valofficial / testofficial  patient
``isic2018``   3 (RGB)   background, lesion         train / — / test                            image
=============  ========  =========================  ==========================================  =========

Batches (``S = img_size``; the PNGs must already be S x S, the release never resizes)::

    train     {"image": float32 (B, C, S, S) in [0, 1] (ToTensor's /255, no normalisation),
               "label": int64 (B, S, S)}
    val/test  the same plus "case": list[str] (the image id) and "patient": list[str]
              (ACDC: the id's first 4 characters; ISIC: the id), batch ``eval_batch_size`` (1)

Model selection (spec §3, §6 item 5): the release selects on ``valofficial`` for ACDC
and on the **test** split for ISIC; that is the faithful default (``select_on`` per
preset, :attr:`ConvFormerPNGDataModule.selection_note` says which). ``select_on="val"``
on ISIC validates on a held-out ``val_fraction`` of the training list instead (whole
patients for patient-level data sets), removed from training, drawn with ``holdout_seed``.

Determinism is the Synapse pipeline's (:mod:`datamodules.synapse`): the training
sampler (:class:`~datamodules.sampling.EpochShuffleSampler`) yields ``(epoch, index)``
and each item's augmentation (:func:`~datamodules.transforms.convformer_train_transform`)
is reseeded from ``item_seed(seed, epoch, index)``, so batches depend only on
``(seed, epoch, step)``, for any ``num_workers``.

Bad data: ``setup()`` checks every file of the stage first (``data_check``,
:mod:`datamodules.checks`: PNG signature, 8 bit, grayscale/RGB, S x S, not truncated,
label values in ``0..C-1`` or, for 2 classes, any value) and raises one
:class:`~datamodules.checks.DataCheckError` listing every broken file; missing roots,
folders and list files raise :class:`~datamodules.errors.DatasetError`; the per-item
reader checks again.
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
from .files import listed_paths, read_list_file
from .loading import SeededLoaders
from .png_layout import (
    IMG_DIR,
    LABEL_DIR,
    LIST_DIR,
    PNG_SUFFIX,
    check_patient_ids,
    get_preset,
    load_png_pair,
    patient_of,
)
from .synthetic_png import SyntheticPNG
from .transforms import convformer_train_transform, item_seed, reseed

__all__ = ["ConvFormerPNGDataModule", "PNGTrainDataset", "PNGEvalDataset", "to_tensors"]

_RELEASE = "the ConvFormer layout's"
#: The splits each Lightning stage reads (any other stage, e.g. ``None``: all three).
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(H, W)`` / ``(H, W, C)`` image → float32 ``(C, H, W)`` in [0, 1]; label → int64 ``(H, W)``."""
    array = image[None] if image.ndim == 2 else np.transpose(image, (2, 0, 1))
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32).div_(255.0)
    return tensor, torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


class _PNGPairs(Dataset):
    def __init__(self, root: Path, ids: Sequence[str], *, channels: int, num_classes: int, img_size: int):
        self.root = Path(root)
        self.ids = list(ids)
        self.channels = channels
        self.num_classes = num_classes
        self.img_size = int(img_size)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = f"{self.ids[index]}{PNG_SUFFIX}"
        return load_png_pair(self.root / IMG_DIR / name, self.root / LABEL_DIR / name, channels=self.channels,
                             num_classes=self.num_classes, size=(self.img_size, self.img_size))


class PNGTrainDataset(_PNGPairs):
    """Training pairs, augmented: ``dataset[(epoch, index)]`` (or ``[index]`` at ``self.epoch``).

    Item: ``{"image": float32 (C, S, S), "label": int64 (S, S)}``; the augmentation of
    an item is seeded by ``item_seed(seed, epoch, index)``.
    """

    def __init__(self, root: Path, ids: Sequence[str], transform: A.BaseCompose | None, *, seed: int = 30,
                 **kwargs: Any):
        super().__init__(root, ids, **kwargs)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (self.epoch, int(item))
        image, label = self.load(index)
        if self.transform is not None:
            reseed(self.transform, item_seed(self.seed, epoch, index))
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        image_t, label_t = to_tensors(image, label)
        return {"image": image_t, "label": label_t}


class PNGEvalDataset(_PNGPairs):
    """Validation / test pairs, unchanged: ``{"image", "label", "case": id, "patient": evaluation unit}``."""

    def __init__(self, root: Path, ids: Sequence[str], *, eval_mode: str, **kwargs: Any):
        super().__init__(root, ids, **kwargs)
        self.eval_mode = eval_mode

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = to_tensors(*self.load(index))
        case = self.ids[index]
        return {"image": image, "label": label, "case": case, "patient": patient_of(case, self.eval_mode)}


class ConvFormerPNGDataModule(SeededLoaders, CheckedDataModule, L.LightningDataModule):
    """ACDC / ISIC 2018 in the ConvFormer release's PNG layout (module docstring).

    Args:
        dataset: the preset, ``"acdc"`` or ``"isic2018"``.
        data_dir: data root with ``img/``, ``label/``, ``MainPatient/``; ``None`` reads the
            preset's environment variable (``ACDC_DATA_DIR`` / ``ISIC2018_DATA_DIR``).
        img_size: side ``S`` every PNG must have (256 in the paper; nothing is resized).
        batch_size: training batch (4 in the paper).
        eval_batch_size: validation / test batch (1, as the release tests).
        num_workers: DataLoader workers; any value gives the same batches.
        augment: the release's training augmentation (else the training PNGs unchanged).
        seed: shuffling and augmentation seed (30 in the release; linked from ``seed_everything``).
        train_split, val_split, test_split: list names under ``MainPatient/`` (``None``: the
            preset's; ISIC has no validation list).
        select_on: ``"val"`` or ``"test"``, the split validated on for model selection
            (``None``: the release's, ACDC ``"val"`` = valofficial, ISIC ``"test"``).
            ``"val"`` without a validation list holds out part of the training list.
        val_fraction: the held-out fraction of the training list in that case.
        holdout_seed: seeds which ids (whole patients for ACDC) are held out.
        synthetic: read a generated stand-in in the same layout instead of ``data_dir``
            (:class:`~datamodules.synthetic_png.SyntheticPNG`; ``synthetic: {num_train: 8}``).
        data_check: ``"full"`` (decode every PNG), ``"fast"`` (headers only) or ``"off"``.
    """

    def __init__(
        self,
        dataset: Literal["acdc", "isic2018"] = "acdc",
        data_dir: str | None = None,
        img_size: int = 256,
        batch_size: int = 4,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 30,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        select_on: Literal["val", "test"] | None = None,
        val_fraction: float = 0.1,
        holdout_seed: int = 0,
        synthetic: SyntheticPNG | None = None,
        data_check: Literal["off", "fast", "full"] = "full",
    ):
        super().__init__()
        self.preset = get_preset(dataset)
        check_loader_arguments(
            positive={"img_size": img_size, "batch_size": batch_size, "eval_batch_size": eval_batch_size},
            non_negative={"num_workers": num_workers, "seed": seed, "holdout_seed": holdout_seed},
            data_dir=data_dir, synthetic=synthetic, data_check=data_check)
        if select_on not in (None, "val", "test"):
            raise ValueError(f"select_on must be 'val', 'test' or None, got {select_on!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.train_split = train_split or self.preset.train_split
        self.val_split = val_split or self.preset.val_split
        self.test_split = test_split or self.preset.test_split
        self.select_on = select_on or self.preset.select_on
        self.val_fraction = float(val_fraction)
        self.holdout_seed = int(holdout_seed)
        self.synthetic = synthetic
        self.data_check = data_check
        self.train_dataset: PNGTrainDataset | None = None
        self.val_dataset: PNGEvalDataset | None = None
        self.test_dataset: PNGEvalDataset | None = None
        self.root: Path | None = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    @property
    def num_classes(self) -> int:
        return self.preset.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preset.class_names

    @property
    def in_channels(self) -> int:
        return self.preset.channels

    @property
    def eval_mode(self) -> str:
        return self.preset.eval_mode

    @property
    def spatial_dims(self) -> int:
        return 2

    @property
    def holds_out(self) -> bool:
        """Whether validation is a held-out part of the training list (``select_on="val"``, no val list)."""
        return self.select_on == "val" and self.val_split is None

    @property
    def selection_note(self) -> str:
        """Which split models are selected on, and whether that is the release's choice."""
        if self.select_on == "test":
            where = f"the test split '{self.test_split}'"
        elif self.holds_out:
            where = f"{self.val_fraction:.0%} of '{self.train_split}' held out (seed {self.holdout_seed})"
        else:
            where = f"'{self.val_split}'"
        faithful = "the release's choice" if self.select_on == self.preset.select_on else "not the release's choice"
        return f"model selection on {where} ({faithful})"

    # -- paths ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.ensure(self.dataset, self.img_size)

    def resolve_root(self) -> Path:
        """The data root, checked to contain ``img/``, ``label/`` and ``MainPatient/``."""
        if self.synthetic is not None:
            return self.synthetic.ensure(self.dataset, self.img_size)
        env, title = self.preset.env_var, self.preset.title
        expect = f"a folder containing {IMG_DIR}/, {LABEL_DIR}/ and {LIST_DIR}/ (the ConvFormer {title} layout)"
        return resolve_data_root(self.data_dir, env, title, expect)

    def read_split(self, root: Path, split: str, *, eval_ids: bool = False) -> list[str]:
        """The ids of ``MainPatient/<split>.txt``; patient-level eval lists must start with 4 digits."""
        path = root / LIST_DIR / f"{split}.txt"
        ids = read_list_file(path, f"{self.preset.title} image ids without extension (e.g. {self.preset.id_example})",
                             f"The {self.preset.title} list files ship with the preprocessed data "
                             f"(spec §4.1); put them in {describe_path(root / LIST_DIR)}")
        if eval_ids and self.eval_mode == "patient":
            check_patient_ids(path, ids)
        return ids

    def split_ids(self, root: Path, which: Sequence[str] = ("train", "val", "test")) -> dict[str, tuple[str, list]]:
        """``{"train" | "val" | "test": (list name, ids)}`` for ``which``, after the optional hold-out.

        Only the list files ``which`` needs are read.
        """
        out: dict[str, tuple[str, list[str]]] = {}
        if "train" in which or ("val" in which and self.holds_out):
            train = self.read_split(root, self.train_split)
            if self.holds_out:
                train, held = self._hold_out(train)
                out["held"] = (self.train_split, held)
            out["train"] = (self.train_split, train)
        if "test" in which or ("val" in which and self.select_on == "test"):
            out["test"] = (self.test_split, self.read_split(root, self.test_split, eval_ids=True))
        if "val" in which:
            if self.select_on == "test":
                out["val"] = out["test"]
            elif self.holds_out:
                out["val"] = out["held"]
            else:
                out["val"] = (self.val_split, self.read_split(root, self.val_split, eval_ids=True))
        return {key: out[key] for key in which}

    def _hold_out(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """Keep / hold out ``val_fraction`` of ``ids`` (whole evaluation units), seeded by ``holdout_seed``."""
        units = list(dict.fromkeys(patient_of(i, self.eval_mode) for i in ids))
        if len(units) < 2:
            raise DatasetError(f"select_on='val' holds out part of '{self.train_split}', which has only "
                               f"{len(units)} {self.eval_mode}(s); expected at least 2")
        n_val = min(len(units) - 1, max(1, round(self.val_fraction * len(units))))
        order = np.random.default_rng(self.holdout_seed).permutation(len(units))
        held = {units[k] for k in order[:n_val]}
        return ([i for i in ids if patient_of(i, self.eval_mode) not in held],
                [i for i in ids if patient_of(i, self.eval_mode) in held])

    # -- whole-set check --------------------------------------------------------------------
    def data_files(self, stage: str | None, root: Path) -> list[DataFile]:
        """The image and label PNGs ``stage`` reads (``None``: every split), each once."""
        splits = self.split_ids(root, _STAGE_SPLITS.get(stage, ("train", "val", "test")))
        size = (self.img_size, self.img_size)
        files: dict[Path, DataFile] = {}
        for split, ids in splits.values():
            list_path = root / LIST_DIR / f"{split}.txt"
            image_ndim = 2 if self.in_channels == 1 else 3  # (H, W) gray or (H, W, 3) RGB
            for folder, content, ndim in ((IMG_DIR, "image", image_ndim), (LABEL_DIR, "label", 2)):
                for path in listed_paths(root / folder, ids, PNG_SUFFIX, _RELEASE):
                    files.setdefault(path, DataFile(path, ndim, list_path, content=content, size=size,
                                                    fold_labels=self.preset.fold_labels))
        return list(files.values())

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        root = self.resolve_root()
        self.root = root
        if self.data_check != "off":
            self.check_data(stage, self.data_check)
        splits = self.split_ids(root, _STAGE_SPLITS.get(stage, ("train", "val", "test")))
        for folder in (IMG_DIR, LABEL_DIR):  # the folders exist (checked above too, unless data_check is off)
            listed_paths(root / folder, (), PNG_SUFFIX, _RELEASE)
        common = {"channels": self.in_channels, "num_classes": self.num_classes, "img_size": self.img_size}
        if stage in (None, "fit"):
            transform = (convformer_train_transform(self.img_size, random_crop=self.preset.random_crop)
                         if self.augment else None)
            self.train_dataset = PNGTrainDataset(root, splits["train"][1], transform, seed=self.seed, **common)
        if stage in (None, "fit", "validate"):
            self.val_dataset = PNGEvalDataset(root, splits["val"][1], eval_mode=self.eval_mode, **common)
        if stage in (None, "test", "predict"):
            self.test_dataset = PNGEvalDataset(root, splits["test"][1], eval_mode=self.eval_mode, **common)

    def val_dataloader(self) -> DataLoader:
        """The model-selection split (:attr:`selection_note`), in list order."""
        return self._loader(self._require(self.val_dataset, "validate"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_dataset, "test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
