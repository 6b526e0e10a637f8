"""Small deterministic synthetic ACDC / ISIC 2018 stand-ins in the ConvFormer release's PNG layout.

:func:`write_synthetic_png` writes real PNG files in the layout of
:mod:`datamodules.png_layout`, so the real :class:`~datamodules.convformer_png.ConvFormerPNGDataModule`
code path is what tests and quick runs exercise (its ``synthetic=SyntheticPNG(...)``
option generates and reads it)::

    <root>/img/<id>.png, <root>/label/<id>.png, <root>/MainPatient/<split>.txt
    <root>/synthetic.json      the generation parameters (marks a complete set)

``acdc``: grayscale "cardiac MR" slices, ids ``<patient:04d>_<slice:02d>`` (patients
0001, 0002, ... numbered on across train, val and test, ``slices_per_patient``
each): a noisy elliptic body (label 0) with a heart whose LV (3, bright disc) is
ringed by the Myo (2, dark ring), with the RV (1, mid-gray crescent-like ellipse)
beside it; the heart shrinks from base to apex and the RV is absent from a
patient's last slice (so a slice can lack a class a patient has). Lists
``trainofficial``, ``valofficial``, ``testofficial``.

``isic2018``: RGB "dermoscopy" images, ids ``ISIC_<n:07d>``: a skin-coloured,
vignetted, noisy background with one brown lesion of irregular outline; labels
are 0/255 masks as in the challenge data (the release's rule maps 255 to 1).
Lists ``train`` and ``test`` (``num_val`` is not used: the release has no
validation list).

Determinism: every image is drawn from ``numpy.random.default_rng(SeedSequence([seed,
split, unit, slice]))``; the same arguments give byte-identical files. The set is
written into a temporary sibling folder that is renamed into place when complete.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .png_layout import IMG_DIR, LABEL_DIR, LIST_DIR, PNG_SUFFIX, get_preset
from .synthetic import MARKER_FILE, ensure_cached_set, write_set_atomically

__all__ = [
    "PNG_FORMAT_VERSION",
    "SyntheticPNG",
    "synthetic_acdc_slice",
    "synthetic_isic_image",
    "write_synthetic_png",
    "ensure_synthetic_png",
]

PNG_FORMAT_VERSION = 1
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    return c[None, :], c[:, None]  # x (1, S), y (S, 1) in [-1, 1]


def synthetic_acdc_slice(
    patient: dict[str, float], slice_index: int, num_slices: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One slice: ``(image uint8 (S, S), label uint8 (S, S) in 0..3)``; ``patient`` from :func:`_acdc_patient`."""
    x, y = _grid(size)
    t = slice_index / max(1, num_slices - 1)  # 0 at the base, 1 at the apex
    shrink = 1.0 - 0.45 * t
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 <= 1.0
    image = np.where(body, 0.22, 0.03) + 0.05 * x
    label = np.zeros((size, size), np.uint8)
    cx, cy = patient["cx"], patient["cy"]
    r_lv = patient["r_lv"] * shrink
    r_myo = r_lv + patient["wall"] * (0.8 + 0.2 * shrink)
    d = np.sqrt(((x - cx) / patient["ax"]) ** 2 + (y - cy) ** 2)
    if slice_index < num_slices - 1 or num_slices == 1:
        rv = ((x - cx + patient["rv_dx"] * shrink) / (0.18 * shrink)) ** 2 + ((y - cy) / (0.28 * shrink)) ** 2 <= 1.0
        rv &= d > r_myo
        label[rv], image[rv] = 1, patient["mu_rv"]
    myo = d <= r_myo
    label[myo], image[myo] = 2, patient["mu_myo"]
    lv = d <= r_lv
    label[lv], image[lv] = 3, patient["mu_lv"]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6 * size / 128.0)
    image = image + rng.normal(0.0, 0.04, image.shape)
    return _to_uint8(image), label


def _acdc_patient(rng: np.random.Generator) -> dict[str, float]:
    return {
        "cx": rng.uniform(-0.1, 0.15), "cy": rng.uniform(-0.1, 0.1), "ax": rng.uniform(0.9, 1.1),
        "r_lv": rng.uniform(0.16, 0.24), "wall": rng.uniform(0.07, 0.1), "rv_dx": rng.uniform(0.44, 0.52),
        "mu_lv": rng.uniform(0.75, 0.85), "mu_myo": rng.uniform(0.3, 0.38), "mu_rv": rng.uniform(0.58, 0.68),
    }


def synthetic_isic_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image: ``(image uint8 (S, S, 3) RGB, label uint8 (S, S) in {0, 255})``."""
    x, y = _grid(size)
    skin = np.array([0.85, 0.66, 0.58]) * rng.uniform(0.85, 1.05)
    vignette = 1.0 - 0.25 * (x**2 + y**2)
    image = skin[None, None, :] * vignette[..., None]
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    radius = rng.uniform(0.2, 0.45)
    angle = np.arctan2(y - cy, x - cx)
    wobble = 1.0 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    lesion = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) <= radius * wobble
    brown = np.array([0.45, 0.28, 0.2]) * rng.uniform(0.7, 1.2)
    image[lesion] = brown
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.8 * size / 128.0)
    image = image + rng.normal(0.0, 0.03, image.shape)
    return _to_uint8(image), np.where(lesion, 255, 0).astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _params(dataset: str, num_train: int, num_val: int, num_test: int, slices_per_patient: int, size: int,
            seed: int) -> dict[str, Any]:
    return {"format": f"convformer-png-{dataset}", "format_version": PNG_FORMAT_VERSION, "num_train": num_train,
            "num_val": num_val if dataset == "acdc" else 0, "num_test": num_test,
            "slices_per_patient": slices_per_patient if dataset == "acdc" else 1, "size": size, "seed": seed}


def _write_png(path: Path, array: np.ndarray) -> None:
    bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, data = cv2.imencode(PNG_SUFFIX, bgr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())


def _write_into(folder: Path, dataset: str, params: dict[str, Any]) -> None:
    preset = get_preset(dataset)
    for sub in (IMG_DIR, LABEL_DIR, LIST_DIR):
        (folder / sub).mkdir(parents=True)
    size, seed, depth = params["size"], params["seed"], params["slices_per_patient"]
    splits = [("train", preset.train_split, params["num_train"]), ("val", preset.val_split, params["num_val"]),
              ("test", preset.test_split, params["num_test"])]
    unit = 0  # patients (ACDC) / images (ISIC) numbered on across the splits
    for split, list_name, count in splits:
        if list_name is None or count == 0:
            continue
        code, ids = _SPLIT_CODES[split], []
        for i in range(count):
            unit += 1
            if dataset == "acdc":
                patient = _acdc_patient(np.random.default_rng(np.random.SeedSequence([seed, code, i])))
                items = []
                for s in range(depth):
                    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i, s + 1]))
                    items.append((f"{unit:04d}_{s + 1:02d}", *synthetic_acdc_slice(patient, s, depth, size, rng)))
            else:
                rng = np.random.default_rng(np.random.SeedSequence([seed, code, i, 0]))
                items = [(f"ISIC_{unit:07d}", *synthetic_isic_image(size, rng))]
            for image_id, image, label in items:
                _write_png(folder / IMG_DIR / f"{image_id}{PNG_SUFFIX}", image)
                _write_png(folder / LABEL_DIR / f"{image_id}{PNG_SUFFIX}", label)
                ids.append(image_id)
        (folder / LIST_DIR / f"{list_name}.txt").write_text("".join(f"{n}\n" for n in ids))
    (folder / MARKER_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def write_synthetic_png(
    root: str | os.PathLike[str], dataset: str = "acdc", *, num_train: int = 8, num_val: int = 2, num_test: int = 4,
    slices_per_patient: int = 4, size: int = 64, seed: int = 0,
) -> Path:
    """Write the synthetic ``dataset`` set into ``root`` (module docstring) and return ``root``.

    Counts are patients for ACDC (``slices_per_patient`` images each) and images for
    ISIC. Idempotent for the same parameters; refuses (``FileExistsError``) to touch a
    non-empty ``root`` holding anything else.
    """
    get_preset(dataset)
    if num_train < 1 or num_test < 1 or num_val < 0 or slices_per_patient < 1 or size < 16:
        raise ValueError("need num_train >= 1, num_test >= 1, num_val >= 0, slices_per_patient >= 1 and size >= 16; "
                         f"got {num_train}, {num_test}, {num_val}, {slices_per_patient}, {size}")
    params = _params(dataset, int(num_train), int(num_val), int(num_test), int(slices_per_patient), int(size),
                     int(seed))
    return write_set_atomically(Path(root), params, lambda folder: _write_into(folder, dataset, params), f"{dataset}")


def ensure_synthetic_png(cache_dir: str | os.PathLike[str] | None = None, dataset: str = "acdc",
                         **kwargs: int) -> Path:
    """The cached set ``<cache_dir>/convformer_<dataset>_synthetic_v<version>_...``, generated on first use.

    ``kwargs``: the counts, ``slices_per_patient``, ``size`` and ``seed`` of :func:`write_synthetic_png`.
    """
    params = _params(dataset, **{k: int(kwargs[k]) for k in ("num_train", "num_val", "num_test",
                                                               "slices_per_patient", "size", "seed")})
    name = (f"convformer_{dataset}_synthetic_v{PNG_FORMAT_VERSION}_train{params['num_train']}_val{params['num_val']}"
            f"_test{params['num_test']}_slices{params['slices_per_patient']}_size{params['size']}_seed{params['seed']}")
    return ensure_cached_set(cache_dir, name, params,
                             lambda root: write_synthetic_png(root, dataset, **kwargs), get_preset(dataset).title)


@dataclass(frozen=True)
class SyntheticPNG:
    """The synthetic stand-in a :class:`~datamodules.convformer_png.ConvFormerPNGDataModule` generates and reads.

    Given as the datamodule's ``synthetic`` option (``synthetic: {num_train: 8}``); the
    data set (ACDC or ISIC) is the datamodule's. Counts are patients for ACDC
    (``slices_per_patient`` images each) and images for ISIC (``num_val`` unused);
    ``size=None`` follows the datamodule's ``img_size``; ``seed`` is the generation
    seed, independent of the training seed.
    """

    num_train: int = 8
    num_val: int = 2
    num_test: int = 4
    slices_per_patient: int = 4
    size: int | None = None
    seed: int = 0
    cache_dir: str | None = None

    def ensure(self, dataset: str, img_size: int) -> Path:
        """The set's folder for ``dataset`` at ``size`` (or ``img_size``), generated on first use."""
        return ensure_synthetic_png(self.cache_dir, dataset, num_train=self.num_train, num_val=self.num_val,
                                    num_test=self.num_test, slices_per_patient=self.slices_per_patient,
                                    size=self.size or img_size, seed=self.seed)
