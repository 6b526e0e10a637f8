"""Small deterministic synthetic low-/normal-light pairs in the LOL / LOL-v2 release layouts.

:func:`write_synthetic_lol` writes real PNG files in the layout of
:mod:`datamodules.lol_layout` (``our485/{low,high}``, ``eval15/{low,high}`` for LOL;
``Real_captured/{Train,Test}/{Low,Normal}`` with the ``low`` / ``normal`` prefixes for
LOL-v2-real; ``Synthetic/{Train,Test}/{Low,Normal}`` for LOL-v2-synthetic), so the real
:class:`~datamodules.lol.LowLightPairsDataModule` code path is what tests and quick runs
exercise (its ``synthetic=SyntheticLowLight(...)`` option generates and reads it).

Each pair (:func:`synthetic_low_light_pair`): a **normal-light** image of smooth
structure (a colour gradient, a few soft coloured blobs and one blurred rectangle, in
[0.1, 0.95]) and its **low-light** version ``clip(k · normal^γ + n)`` with a darkening
``k ∈ [0.06, 0.16]``, a gamma ``γ ∈ [1.4, 2.0]`` and Gaussian noise ``n`` of standard
deviation ``σ ∈ [0.004, 0.012]``, both rounded to uint8 RGB. The mapping is learnable:
the normal image is a smooth, nearly invertible function of the low one.

Determinism: pair ``i`` of split ``s`` is drawn from ``default_rng(SeedSequence([seed,
s, i]))``; the same arguments give byte-identical files. The set is written into a
temporary sibling folder renamed into place when complete
(:func:`~datamodules.synthetic.write_set_atomically`), with ``synthetic.json`` (the
generation parameters) marking a complete set.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .lol_layout import get_layout
from .synthetic import MARKER_FILE, ensure_cached_set, write_set_atomically

__all__ = [
    "LOL_FORMAT_VERSION",
    "SyntheticLowLight",
    "synthetic_low_light_pair",
    "write_synthetic_lol",
    "ensure_synthetic_lol",
]

LOL_FORMAT_VERSION = 1
_SPLIT_CODES = {"train": 0, "test": 1}


def synthetic_low_light_pair(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(low uint8 (H, W, 3) RGB, normal uint8 (H, W, 3) RGB)``: one pair (module docstring)."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    base, slope_x, slope_y = rng.uniform(0.3, 0.6, 3), rng.uniform(-0.25, 0.25, 3), rng.uniform(-0.25, 0.25, 3)
    normal = base + slope_x * (x - 0.5) + slope_y * (y - 0.5)
    for _ in range(3):
        cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.1, 0.3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        normal = normal + rng.uniform(-0.3, 0.35, 3) * blob
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    box = np.zeros((height, width, 1))
    box[top:top + height // 3, left:left + width // 3] = 1.0
    box = cv2.GaussianBlur(box, (0, 0), 1.0)[..., None]
    normal = normal + rng.uniform(-0.25, 0.25, 3) * box
    normal = np.clip(normal, 0.1, 0.95)
    k, gamma, sigma = rng.uniform(0.06, 0.16), rng.uniform(1.4, 2.0), rng.uniform(0.004, 0.012)
    low = k * normal**gamma + rng.normal(0.0, sigma, normal.shape)
    return _to_uint8(low), _to_uint8(normal)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _params(dataset: str, num_train: int, num_test: int, height: int, width: int, seed: int) -> dict[str, Any]:
    return {"format": f"low-light-pairs-{dataset}", "format_version": LOL_FORMAT_VERSION, "num_train": num_train,
            "num_test": num_test, "height": height, "width": width, "seed": seed}


def _key(dataset: str, unit: int) -> str:
    """Names like the release's: LOL ``<n>``, LOL-v2-real ``<n:05d>`` (after its prefixes), synthetic ``r<hex>``."""
    if dataset == "lol":
        return str(unit)
    if dataset == "lol_v2_real":
        return f"{unit:05d}"
    return f"r{unit * 2654435761 % (1 << 32):08x}s"


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())


def _write_into(folder: Path, dataset: str, params: dict[str, Any]) -> None:
    layout = get_layout(dataset)
    base = folder / layout.subset if layout.subset else folder
    unit = 0  # numbered on across the splits, so no name repeats
    for split, count in (("train", params["num_train"]), ("test", params["num_test"])):
        low_dir, high_dir = (base / layout.split_dir(split) / side for side in (layout.low_dir, layout.high_dir))
        low_dir.mkdir(parents=True)
        high_dir.mkdir(parents=True)
        for i in range(count):
            unit += 1
            rng = np.random.default_rng(np.random.SeedSequence([params["seed"], _SPLIT_CODES[split], i]))
            low, normal = synthetic_low_light_pair(params["height"], params["width"], rng)
            key = _key(dataset, unit)
            _write_png(low_dir / layout.file_name(key, "low"), low)
            _write_png(high_dir / layout.file_name(key, "high"), normal)
    (folder / MARKER_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def write_synthetic_lol(
    root: str | os.PathLike[str], dataset: str = "lol", *, num_train: int = 8, num_test: int = 4, height: int = 48,
    width: int = 64, seed: int = 0,
) -> Path:
    """Write the synthetic ``dataset`` set (a :data:`~datamodules.lol_layout.LAYOUTS` name) into ``root``.

    Idempotent for the same parameters; refuses (``FileExistsError``) to touch a
    non-empty ``root`` holding anything else.
    """
    get_layout(dataset)
    if num_train < 1 or num_test < 1 or height < 16 or width < 16:
        raise ValueError(f"need num_train >= 1, num_test >= 1, height >= 16 and width >= 16; got {num_train}, "
                         f"{num_test}, {height}, {width}")
    params = _params(dataset, int(num_train), int(num_test), int(height), int(width), int(seed))
    return write_set_atomically(Path(root), params, lambda folder: _write_into(folder, dataset, params), dataset)


def ensure_synthetic_lol(cache_dir: str | os.PathLike[str] | None = None, dataset: str = "lol",
                         **kwargs: int) -> Path:
    """The cached set ``<cache_dir>/<dataset>_synthetic_v<version>_...``, generated on first use.

    ``kwargs``: ``num_train``, ``num_test``, ``height``, ``width`` and ``seed`` of :func:`write_synthetic_lol`.
    """
    params = _params(dataset, **{k: int(kwargs[k]) for k in ("num_train", "num_test", "height", "width", "seed")})
    name = (f"{dataset}_synthetic_v{LOL_FORMAT_VERSION}_train{params['num_train']}_test{params['num_test']}"
            f"_{params['height']}x{params['width']}_seed{params['seed']}")
    return ensure_cached_set(cache_dir, name, params,
                             lambda root: write_synthetic_lol(root, dataset, **kwargs), get_layout(dataset).title)


@dataclass(frozen=True)
class SyntheticLowLight:
    """The synthetic stand-in a :class:`~datamodules.lol.LowLightPairsDataModule` generates and reads.

    Given as the datamodule's ``synthetic`` option (``synthetic: {num_train: 8}``); the
    layout (LOL, LOL-v2-real, LOL-v2-synthetic) is the datamodule's ``dataset``; ``seed``
    is the generation seed, independent of the training seed.
    """

    num_train: int = 8
    num_test: int = 4
    height: int = 48
    width: int = 64
    seed: int = 0
    cache_dir: str | None = None

    def ensure(self, dataset: str) -> Path:
        """The set's folder for ``dataset``, generated on first use."""
        return ensure_synthetic_lol(self.cache_dir, dataset, num_train=self.num_train, num_test=self.num_test,
                                    height=self.height, width=self.width, seed=self.seed)
