"""Small deterministic class-folder image sets in ImageNet's on-disk layout (a quick stand-in for ImageNet-1K).

:func:`write_synthetic_folders` writes real JPEG files where
:class:`~datamodules.imagenet.ImageNetDataModule` reads ImageNet, so tests and quick runs
exercise the real loader (its ``synthetic=SyntheticFolders(...)`` option)::

    <root>/train/<wnid>/<wnid>_<i>.JPEG                 train_per_class images per class
    <root>/val/<wnid>/ILSVRC2012_val_<n:08d>.JPEG       val_per_class images per class
    <root>/synthetic.json                               the generation parameters (marks a complete set)

Class ``k`` of ``num_classes`` (wnids ``n9000000k``, sorted = class index) is a texture
filling the whole image, so any random crop shows it: one of five patterns (horizontal
stripes, vertical stripes, checkerboard, dots, diagonal stripes) in one of two palettes
(warm, cool), the pattern changing fastest (``k % 5``, then ``k // 5 % 2``; beyond 10
classes the palettes' hues shift). Each image draws its period (5–9 px at 40²), phase,
colours (around the palette) and pixel noise; the textures survive flips, ±30° rotations
and RandAugment's colour operations well enough for a tiny ViT to separate them.

Determinism: image ``i`` of class ``k`` in split ``s`` is drawn from
``numpy.random.default_rng(SeedSequence([seed, s, k, i]))`` and written by PIL at JPEG
quality 90; the same arguments and library versions give byte-identical files. The set is
written into a temporary sibling folder renamed into place when complete.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .synthetic import MARKER_FILE, ensure_cached_set, write_set_atomically

__all__ = ["FOLDERS_FORMAT_VERSION", "SyntheticFolders", "synthetic_texture", "synthetic_wnids",
           "write_synthetic_folders", "ensure_synthetic_folders"]

FOLDERS_FORMAT_VERSION = 1
_SPLITS = {"train": 0, "val": 1}
_PALETTES = (np.array([[0.85, 0.25, 0.15], [0.95, 0.75, 0.2]]),   # warm: red, amber
             np.array([[0.15, 0.35, 0.85], [0.2, 0.8, 0.6]]))    # cool: blue, teal


def synthetic_wnids(num_classes: int) -> list[str]:
    """WordNet-id-like folder names ``n90000000``, ``n90000001``, ... (sorted order = class index)."""
    return [f"n9{k:07d}" for k in range(num_classes)]


def synthetic_texture(class_index: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``class_index``: uint8 ``(size, size, 3)`` RGB (module docstring)."""
    pattern, palette = class_index % 5, (class_index // 5) % 2
    shift = (class_index // 10) * 0.17  # classes beyond 10: rotate the palette's channels a little
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(0.125, 0.225) * size
    phase_x, phase_y = rng.uniform(0, period, 2)
    u, v = (x + phase_x) / period, (y + phase_y) / period
    if pattern == 0:
        mask = np.floor(v) % 2 == 0
    elif pattern == 1:
        mask = np.floor(u) % 2 == 0
    elif pattern == 2:
        mask = (np.floor(u) + np.floor(v)) % 2 == 0
    elif pattern == 3:
        mask = (u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < 0.09
    else:
        mask = np.floor((u + v) / np.sqrt(2)) % 2 == 0
    colours = np.roll(_PALETTES[palette], int(shift > 0), axis=1) * (1 - shift) + shift * 0.5
    colours = np.clip(colours + rng.normal(0, 0.06, colours.shape), 0, 1)
    image = np.where(mask[..., None], colours[0], colours[1] * 0.35)
    image = image + rng.normal(0, 0.04, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _params(num_classes: int, train_per_class: int, val_per_class: int, size: int, seed: int) -> dict[str, Any]:
    return {"format": "imagenet-class-folders", "format_version": FOLDERS_FORMAT_VERSION,
            "num_classes": num_classes, "train_per_class": train_per_class, "val_per_class": val_per_class,
            "size": size, "seed": seed}


def _write_into(folder: Path, params: dict[str, Any]) -> None:
    wnids = synthetic_wnids(params["num_classes"])
    val_number = 0
    for split, code in _SPLITS.items():
        for k, wnid in enumerate(wnids):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(params[f"{split}_per_class"]):
                rng = np.random.default_rng(np.random.SeedSequence([params["seed"], code, k, i]))
                if split == "train":
                    name = f"{wnid}_{i}.JPEG"
                else:
                    val_number += 1
                    name = f"ILSVRC2012_val_{val_number:08d}.JPEG"
                image = Image.fromarray(synthetic_texture(k, params["size"], rng))
                image.save(folder / split / wnid / name, format="JPEG", quality=90)
    (folder / MARKER_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def write_synthetic_folders(root: str | os.PathLike[str], *, num_classes: int = 10, train_per_class: int = 20,
                            val_per_class: int = 5, size: int = 40, seed: int = 0) -> Path:
    """Write the set into ``root`` (module docstring) and return ``root``.

    Idempotent for the same parameters; refuses (``FileExistsError``) to touch a non-empty
    ``root`` holding anything else.
    """
    if num_classes < 1 or train_per_class < 1 or val_per_class < 1 or size < 8:
        raise ValueError("need num_classes, train_per_class, val_per_class >= 1 and size >= 8; got "
                         f"{num_classes}, {train_per_class}, {val_per_class}, {size}")
    params = _params(int(num_classes), int(train_per_class), int(val_per_class), int(size), int(seed))
    return write_set_atomically(Path(root), params, lambda folder: _write_into(folder, params), "class-folder")


def ensure_synthetic_folders(cache_dir: str | os.PathLike[str] | None = None, **kwargs: int) -> Path:
    """The cached set ``<cache_dir>/imagenet_synthetic_v<version>_...``, generated on first use.

    ``kwargs``: the arguments of :func:`write_synthetic_folders`.
    """
    params = _params(*(int(kwargs[k]) for k in ("num_classes", "train_per_class", "val_per_class", "size",
                                                 "seed")))
    name = (f"imagenet_synthetic_v{FOLDERS_FORMAT_VERSION}_c{params['num_classes']}_train{params['train_per_class']}"
            f"_val{params['val_per_class']}_size{params['size']}_seed{params['seed']}")
    return ensure_cached_set(cache_dir, name, params,
                             lambda root: write_synthetic_folders(root, **kwargs), "ImageNet-layout")


@dataclass(frozen=True)
class SyntheticFolders:
    """The synthetic stand-in an :class:`~datamodules.imagenet.ImageNetDataModule` generates and reads.

    Given as the datamodule's ``synthetic`` option (``synthetic: {num_classes: 10}``); ``size``
    is the stored image side (``None``: ``img_size`` · 256/224, so evaluation's resize + crop
    and training's random crops both do something); ``seed`` is the generation seed,
    independent of the training seed.
    """

    num_classes: int = 10
    train_per_class: int = 20
    val_per_class: int = 5
    size: int | None = None
    seed: int = 0
    cache_dir: str | None = None

    def ensure(self, img_size: int) -> Path:
        """The set's folder, generated on first use."""
        size = self.size or int(round(img_size * 256 / 224))
        return ensure_synthetic_folders(self.cache_dir, num_classes=self.num_classes,
                                        train_per_class=self.train_per_class, val_per_class=self.val_per_class,
                                        size=size, seed=self.seed)
