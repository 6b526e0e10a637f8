"""Small deterministic synthetic data sets in the real on-disk formats.

:func:`write_synthetic_synapse` writes a Synapse-like multi-organ "CT" set in
exactly the TransUNet release layout, so the real :class:`SynapseDataModule`
code path is what the tests and the quick runs exercise (the datamodule's
``synthetic=SyntheticSynapse(...)`` option generates and reads it)::

    <root>/train_npz/case0005_slice000.npz ...   image float32 (size, size) in [0, 1],
                                                 label uint8 (size, size) in 0..8
    <root>/test_vol_h5/case0008.npy.h5 ...       image float32 (D, size, size),
                                                 label uint8 (D, size, size)
    <root>/lists_Synapse/train.txt, test_vol.txt names without extension
    <root>/synthetic.json                        the generation parameters (ignored
                                                 by the loader; marks a complete set)

What the volumes look like (all sizes relative to the field of view, so any
``size`` works): air (0) around an elliptic body (soft tissue ~0.25, label 0)
with a bright vertebra behind (~0.88, label 0: a distractor as bright as the
aorta), and the eight organs as smooth 3-D ellipsoids whose centres drift
slowly across slices and whose cross-sections grow and shrink with the slice
index: liver (large) ... aorta (a thin tube through every slice), gallbladder
(a dark spot in the liver) and pancreas (small). Organs start and end at different slices, so most are
absent from some slices; the gallbladder is also missing from whole cases
(every 4th training case; the last test case when there are two or more), so
the "empty ground truth" rules of the Synapse metric are exercised
(``absent_gallbladder=False``: every case has every organ, so a per-organ Dice
measures learning only: under those rules a case without the organ scores 0
when nothing is predicted there, capping that organ's mean at (N − 1)/N). Class
intensities overlap (means 0.38-0.88, both kidneys alike, noise sd 0.04 on a
slightly blurred image), so both intensity and shape/position are needed. A
small network learns it in a few hundred steps on a CPU: a 3-level U-Net of
16 base channels trained with 0.4 CE + 0.6 Dice (SGD lr 0.05, momentum 0.9,
batch 8, img_size 64, the official augmentation) on the default set reached
Dice 0.72-0.97 on every organ of both test volumes after 300 steps (format
version 1); the quick CSWin-UNet recipe (304 AdamW steps at 64²) learns every
organ of version 2, whose gallbladder is larger (:data:`FORMAT_VERSION`).

Determinism: every case is drawn from ``numpy.random.default_rng(SeedSequence([seed,
split, case_index]))``; the same arguments give byte-identical arrays.
Atomicity: the set is written into a temporary sibling folder which is renamed
into place when complete, so an interrupted generation is never mistaken for a
complete set.

Case names follow the real split (training case0005, case0006, ...; test
case0008, case0022, ...); beyond the 18 / 12 real names, training cases are
case0101, case0102, ... and test cases case0201, case0202, ....
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from .synapse_layout import H5_SUFFIX, LIST_DIR, NPZ_SUFFIX, TEST_DIR, TEST_LIST, TRAIN_DIR, TRAIN_LIST

__all__ = [
    "FORMAT_VERSION",
    "MARKER_FILE",
    "default_cache_dir",
    "is_complete",
    "write_set_atomically",
    "synthetic_synapse_case",
    "write_synthetic_synapse",
    "ensure_synthetic_synapse",
    "SyntheticSynapse",
]

#: 2: a larger gallbladder (semi-axes 0.14 × 0.12 instead of 0.09 × 0.075, slices 0.40-0.85 instead of
#: 0.45-0.80), so the quick recipes can learn it; version 1's was never learned in 304 quick CSWin-UNet steps.
FORMAT_VERSION = 2
MARKER_FILE = "synthetic.json"
CACHE_ENV_VAR = "REPRO_CACHE_DIR"

OFFICIAL_TRAIN_CASES = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
OFFICIAL_TEST_CASES = (8, 22, 38, 36, 32, 2, 29, 3, 1, 4, 25, 35)

# label: (x centre, y centre, x semi-axis, y semi-axis, z start, z end, intensity, x drift, y drift)
# x, y in [-1, 1] (y grows downwards = posterior); z in [0, 1] over the slices of a case.
# Painted in this order: later organs overwrite earlier ones where they overlap.
_ORGANS: tuple[tuple[int, tuple[float, ...]], ...] = (
    (5, (-0.38, -0.12, 0.40, 0.34, -0.05, 0.75, 0.62, 0.06, 0.04)),  # liver (large)
    (7, (0.50, -0.02, 0.15, 0.21, 0.05, 0.60, 0.70, -0.03, 0.03)),  # spleen
    (8, (0.24, -0.32, 0.25, 0.17, 0.20, 0.75, 0.46, 0.05, 0.00)),  # stomach
    (3, (0.46, 0.27, 0.12, 0.17, 0.35, 1.00, 0.78, 0.00, -0.03)),  # kidney_left (image right)
    (4, (-0.46, 0.27, 0.12, 0.17, 0.25, 0.90, 0.78, 0.00, -0.03)),  # kidney_right (image left)
    (6, (0.08, 0.04, 0.24, 0.06, 0.30, 0.62, 0.54, 0.05, 0.00)),  # pancreas (thin)
    (2, (-0.30, 0.02, 0.14, 0.12, 0.40, 0.85, 0.38, 0.02, 0.02)),  # gallbladder (small)
    (1, (0.06, 0.27, 0.06, 0.06, -0.20, 1.20, 0.88, 0.02, -0.02)),  # aorta (thin tube, all slices)
)
_BODY_INTENSITY = 0.25
_BONE_INTENSITY = 0.88
_NOISE_SD = 0.04
_BLUR_SIGMA = 0.6  # in pixels at size 128, scaled with size


def _case_names(split: str, count: int) -> list[str]:
    official = OFFICIAL_TRAIN_CASES if split == "train" else OFFICIAL_TEST_CASES
    extra_start = 101 if split == "train" else 201
    numbers = list(official[:count]) + [extra_start + i for i in range(max(0, count - len(official)))]
    return [f"case{n:04d}" for n in numbers]


def synthetic_synapse_case(
    rng: np.random.Generator, *, depth: int, size: int, drop_labels: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic volume: ``(image float32 (depth, size, size) in [0, 1], label uint8)``."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    y = coords[None, :, None]
    x = coords[None, None, :]
    z = (np.arange(depth, dtype=np.float64)[:, None, None] + 0.5) / depth

    label = np.zeros((depth, size, size), dtype=np.uint8)
    image = np.zeros((depth, size, size), dtype=np.float64)

    # body: an ellipse whose size varies a little along z; a vertebra behind the aorta
    bx = 0.86 * rng.uniform(0.95, 1.05) * (1.0 + 0.04 * np.sin(np.pi * z))
    by = 0.66 * rng.uniform(0.95, 1.05) * (1.0 + 0.04 * np.sin(np.pi * z))
    body = (x / bx) ** 2 + ((y - 0.02) / by) ** 2 <= 1.0
    image[body] = _BODY_INTENSITY + rng.uniform(-0.02, 0.02)
    spine_y = 0.50 + rng.uniform(-0.03, 0.03)
    spine = ((x - 0.0) / 0.13) ** 2 + ((y - spine_y) / 0.10) ** 2 <= 1.0
    image[np.broadcast_to(spine, image.shape)] = _BONE_INTENSITY

    offset = rng.uniform(-0.02, 0.02)  # case-level intensity shift
    for lab, (cx, cy, rx, ry, z0, z1, mu, dx, dy) in _ORGANS:
        cx = cx + rng.uniform(-0.04, 0.04)
        cy = cy + rng.uniform(-0.04, 0.04)
        rx = rx * rng.uniform(0.85, 1.15)
        ry = ry * rng.uniform(0.85, 1.15)
        shift = rng.uniform(-0.08, 0.08)
        z0, z1 = z0 + shift, z1 + shift
        mu = mu + offset + rng.uniform(-0.02, 0.02)
        if lab in drop_labels:
            continue
        zc, hz = (z0 + z1) / 2.0, (z1 - z0) / 2.0
        t = np.clip(1.0 - ((z - zc) / hz) ** 2, 0.0, None)  # ellipsoid cross-section (squared scale)
        scale = np.sqrt(t)
        ccx = cx + dx * (z - zc) / hz
        ccy = cy + dy * (z - zc) / hz
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = ((x - ccx) / (rx * scale + 1e-12)) ** 2 + ((y - ccy) / (ry * scale + 1e-12)) ** 2
        mask = (r2 <= 1.0) & (scale > 0.0) & body
        label[mask] = lab
        image[mask] = mu

    sigma = _BLUR_SIGMA * size / 128.0
    image = ndimage.gaussian_filter(image, sigma=(0.0, sigma, sigma), mode="nearest")
    image += rng.normal(0.0, _NOISE_SD, size=image.shape) * body
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return image, label


def _params(num_train_cases: int, num_test_cases: int, slices_per_case: int, size: int, seed: int,
            absent_gallbladder: bool = True) -> dict[str, Any]:
    params = {
        "format": "synapse-transunet-release",
        "format_version": FORMAT_VERSION,
        "num_train_cases": int(num_train_cases),
        "num_test_cases": int(num_test_cases),
        "slices_per_case": int(slices_per_case),
        "size": int(size),
        "seed": int(seed),
    }
    if not absent_gallbladder:  # only when not the default, so existing sets keep their marker
        params["absent_gallbladder"] = False
    return params


def is_complete(root: Path, params: dict[str, Any]) -> bool:
    """``root`` holds a finished synthetic set written with ``params`` (its marker file says so)."""
    try:
        return json.loads((root / MARKER_FILE).read_text()) == params
    except (OSError, ValueError):
        return False


def write_set_atomically(root: Path, params: dict[str, Any], write_into, what: str) -> Path:
    """Write a synthetic set into ``root`` through a temporary sibling renamed into place.

    ``write_into(folder)`` writes the files and the marker (``params``). Idempotent: a
    complete ``root`` with the same ``params`` is left alone (also when another process
    finished it first); a non-empty ``root`` holding anything else raises ``FileExistsError``.
    """
    root = Path(root).expanduser()
    if is_complete(root, params):
        return root
    if root.exists():
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        else:
            raise FileExistsError(f"{root.absolute()}: exists and is not a complete synthetic {what} set with "
                                  f"parameters {params}; refusing to overwrite it (delete it or choose another folder)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_into(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not is_complete(root, params):  # another process finished the same set first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_into(folder: Path, params: dict[str, Any]) -> None:
    num_train, num_test = params["num_train_cases"], params["num_test_cases"]
    depth, size, seed = params["slices_per_case"], params["size"], params["seed"]
    absent = params.get("absent_gallbladder", True)
    (folder / TRAIN_DIR).mkdir(parents=True)
    (folder / TEST_DIR).mkdir()
    (folder / LIST_DIR).mkdir()

    from tqdm.auto import tqdm

    slice_names: list[str] = []
    bar = tqdm(total=num_train + num_test, desc="writing synthetic Synapse", unit="case", leave=False,
               disable=num_train + num_test < 8)  # tiny test sets are written in a blink
    for i, case in enumerate(_case_names("train", num_train)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0, i]))
        drop = (2,) if absent and i % 4 == 3 else ()
        image, label = synthetic_synapse_case(rng, depth=depth, size=size, drop_labels=drop)
        for s in range(depth):
            name = f"{case}_slice{s:03d}"
            np.savez(folder / TRAIN_DIR / f"{name}{NPZ_SUFFIX}", image=image[s], label=label[s])
            slice_names.append(name)
        bar.update()

    test_names = _case_names("test", num_test)
    for i, case in enumerate(test_names):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i]))
        drop = (2,) if absent and num_test >= 2 and i == num_test - 1 else ()
        image, label = synthetic_synapse_case(rng, depth=depth, size=size, drop_labels=drop)
        with h5py.File(folder / TEST_DIR / f"{case}{H5_SUFFIX}", "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label)
        bar.update()
    bar.close()

    (folder / LIST_DIR / TRAIN_LIST).write_text("".join(f"{n}\n" for n in slice_names))
    (folder / LIST_DIR / TEST_LIST).write_text("".join(f"{n}\n" for n in test_names))
    (folder / MARKER_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def write_synthetic_synapse(
    root: str | os.PathLike[str],
    *,
    num_train_cases: int = 4,
    num_test_cases: int = 2,
    slices_per_case: int = 16,
    size: int = 128,
    seed: int = 0,
    absent_gallbladder: bool = True,
) -> Path:
    """Write the synthetic Synapse set into ``root`` (module docstring) and return ``root``.

    Idempotent: if ``root`` already holds a complete set with the same parameters it
    is left alone. Refuses (``FileExistsError``) to touch a non-empty ``root`` that
    holds anything else.
    """
    if num_train_cases < 1 or num_test_cases < 1 or slices_per_case < 1 or size < 8:
        raise ValueError(
            "need num_train_cases >= 1, num_test_cases >= 1, slices_per_case >= 1 and size >= 8; got "
            f"{num_train_cases}, {num_test_cases}, {slices_per_case}, {size}"
        )
    params = _params(num_train_cases, num_test_cases, slices_per_case, size, seed, absent_gallbladder)
    return write_set_atomically(Path(root), params, lambda folder: _write_into(folder, params), "Synapse")


def default_cache_dir() -> Path:
    """``$REPRO_CACHE_DIR`` or ``~/.cache/repro-seg``."""
    value = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "repro-seg"


def ensure_cached_set(cache_dir: str | os.PathLike[str] | None, name: str, params: dict[str, Any],
                      write: Callable[[Path], Any], title: str) -> Path:
    """``<cache_dir>/<name>`` (default :func:`default_cache_dir`) holding a finished set of ``params``.

    Reused when its marker matches; otherwise a stale folder of that name is removed and
    ``write(root)`` generates the set (atomically, see :func:`write_set_atomically`), with one
    line saying where it went.
    """
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name
    if is_complete(root, params):
        return root
    if root.exists():  # our own cache name without a matching marker: not ours to trust, regenerate
        shutil.rmtree(root) if root.is_dir() else root.unlink()
    write(root)
    print(f"Synthetic {title} data set written to {root.absolute()}", flush=True)
    return root


def synthetic_synapse_dirname(
    *, num_train_cases: int = 4, num_test_cases: int = 2, slices_per_case: int = 16, size: int = 128, seed: int = 0,
    absent_gallbladder: bool = True,
) -> str:
    return (
        f"synapse_synthetic_v{FORMAT_VERSION}_train{num_train_cases}_test{num_test_cases}"
        f"_slices{slices_per_case}_size{size}_seed{seed}" + ("" if absent_gallbladder else "_allorgans")
    )


def ensure_synthetic_synapse(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    num_train_cases: int = 4,
    num_test_cases: int = 2,
    slices_per_case: int = 16,
    size: int = 128,
    seed: int = 0,
    absent_gallbladder: bool = True,
) -> Path:
    """The folder of the synthetic set for these arguments, generated on first use.

    The folder ``<cache_dir>/synapse_synthetic_v<version>_train.._test.._slices.._size.._seed..``
    lives under ``cache_dir`` (default :func:`default_cache_dir`). Generation prints
    one line saying where the set is.
    """
    kwargs = {
        "num_train_cases": int(num_train_cases),
        "num_test_cases": int(num_test_cases),
        "slices_per_case": int(slices_per_case),
        "size": int(size),
        "seed": int(seed),
        "absent_gallbladder": bool(absent_gallbladder),
    }
    return ensure_cached_set(cache_dir, synthetic_synapse_dirname(**kwargs), _params(**kwargs),
                             lambda root: write_synthetic_synapse(root, **kwargs), "Synapse")


@dataclass(frozen=True)
class SyntheticSynapse:
    """The synthetic stand-in a :class:`~datamodules.synapse.SynapseDataModule` can generate and read.

    Given as the datamodule's ``synthetic`` option (``synthetic: {size: 64}`` in a config);
    the fields are the arguments of :func:`ensure_synthetic_synapse` (``seed`` is the
    generation seed, independent of the training seed; ``cache_dir`` defaults to
    :func:`default_cache_dir`); ``absent_gallbladder=False`` puts every organ in every case
    (module docstring).
    """

    num_train_cases: int = 4
    num_test_cases: int = 2
    slices_per_case: int = 16
    size: int = 128
    seed: int = 0
    cache_dir: str | None = None
    absent_gallbladder: bool = True

    def ensure(self) -> Path:
        """The set's folder, generated on first use."""
        return ensure_synthetic_synapse(self.cache_dir, num_train_cases=self.num_train_cases,
                                        num_test_cases=self.num_test_cases, slices_per_case=self.slices_per_case,
                                        size=self.size, seed=self.seed,
                                        absent_gallbladder=self.absent_gallbladder)
