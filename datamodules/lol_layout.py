"""The release layouts of LOL, LOL-v2-real and LOL-v2-synthetic: folders, pairing rules, checked readers.

On disk (``shared/papers/glare.md`` §4.1), under a data root::

    lol               <root>/our485/{low,high}/<name>.png   (485 train pairs, 400 x 600)
                      <root>/eval15/{low,high}/<name>.png   (15 test pairs)
    lol_v2_real       <root>/Real_captured/{Train,Test}/Low/low<id>.png      (689 / 100 pairs, 400 x 600)
                      <root>/Real_captured/{Train,Test}/Normal/normal<id>.png
    lol_v2_synthetic  <root>/Synthetic/{Train,Test}/{Low,Normal}/<name>.png  (900 / 100 pairs, 384 x 384)

For LOL-v2 the root is the release's ``LOL-v2`` folder; a root that is the
``Real_captured`` / ``Synthetic`` folder itself (holding ``Train/`` and ``Test/``) works too.

Pairing: a low-light and a normal-light file pair when their *keys* are equal, the key
being the file name without the layout's prefix (``low`` / ``normal`` for LOL-v2-real,
none elsewhere). The release pairs LOL by equal file name (``LoL_Dataset``, files whose
name contains ``png``) and LOL-v2 by position in the two sorted listings
(``LoL_Dataset_v2``); on an intact set both rules give the same pairs as ours, and ours
also detects a missing partner instead of shifting every later pair. Pairs are in
sorted key order (the release uses ``os.listdir`` order for LOL).

Shared by the loader (:mod:`datamodules.lol`) and the synthetic writer
(:mod:`datamodules.synthetic_lol`), which must agree on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import DatasetError, describe_path
from .files import require_folder

__all__ = ["IMAGE_SUFFIX", "LowLightLayout", "LAYOUTS", "get_layout", "LowLightPair", "read_rgb"]

IMAGE_SUFFIX = ".png"


@dataclass(frozen=True)
class LowLightPair:
    """One low-light / normal-light pair; ``key`` names it (the ``case`` of evaluation)."""

    key: str
    low: Path
    high: Path


@dataclass(frozen=True)
class LowLightLayout:
    """One data set's release layout (module docstring)."""

    name: str
    title: str
    env_var: str
    subset: str | None  # LOL-v2: the release's sub-folder (Real_captured / Synthetic)
    split_dirs: tuple[tuple[str, str], ...]  # (("train", "our485"), ("test", "eval15"))
    low_dir: str
    high_dir: str
    low_prefix: str = ""
    high_prefix: str = ""
    size: tuple[int, int] | None = None  # the release's (H, W), informative only
    counts: tuple[tuple[str, int], ...] = ()  # the release's pair counts, informative only

    def split_dir(self, split: str) -> str:
        return dict(self.split_dirs)[split]

    def base(self, root: Path) -> Path:
        """The folder holding the split folders: ``root`` or ``root/<subset>``."""
        if self.subset is not None and (root / self.subset).is_dir():
            return root / self.subset
        return root

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        """``(low folder, high folder)`` of ``split`` under the data root."""
        where = self.base(root) / self.split_dir(split)
        return where / self.low_dir, where / self.high_dir

    def key(self, name: str, prefix: str) -> str:
        """The pairing key of file ``name``: its stem without ``prefix`` (the prefix matched in any case)."""
        stem = name[: -len(IMAGE_SUFFIX)] if name.lower().endswith(IMAGE_SUFFIX) else name
        if prefix and stem.lower().startswith(prefix.lower()):
            stem = stem[len(prefix):]
        return stem

    def file_name(self, key: str, side: str) -> str:
        """The file name of ``key`` on ``side`` (``"low"`` / ``"high"``); the synthetic writer's names."""
        return f"{self.low_prefix if side == 'low' else self.high_prefix}{key}{IMAGE_SUFFIX}"

    def expectation(self, root: Path, split: str) -> str:
        low, high = self.folders(root, split)
        return (f"the {self.title} release layout: {describe_path(low)} and {describe_path(high)} holding "
                f"*{IMAGE_SUFFIX} pairs")

    def scan(self, root: Path, split: str) -> tuple[list[LowLightPair], list[Path], list[Path]]:
        """``(pairs, low files without a partner, high files without a partner)`` of ``split``.

        DatasetError when a folder is missing or the split holds no pair at all.
        """
        low_dir, high_dir = self.folders(root, split)
        for folder in (low_dir, high_dir):
            require_folder(folder, self.expectation(root, split))
        lows = {self.key(p.name, self.low_prefix): p for p in _images(low_dir)}
        highs = {self.key(p.name, self.high_prefix): p for p in _images(high_dir)}
        pairs = [LowLightPair(k, lows[k], highs[k]) for k in sorted(lows.keys() & highs.keys())]
        if not pairs:
            raise DatasetError(f"{describe_path(low_dir.parent)}: no low/normal-light pair found "
                               f"({len(lows)} low, {len(highs)} normal-light files); expected "
                               f"{self.expectation(root, split)}, paired by name"
                               + (f" after the prefixes '{self.low_prefix}' / '{self.high_prefix}'"
                                  if self.low_prefix else ""))
        return (pairs, [lows[k] for k in sorted(lows.keys() - highs.keys())],
                [highs[k] for k in sorted(highs.keys() - lows.keys())])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIX) and not p.name.startswith("."))


LAYOUTS: dict[str, LowLightLayout] = {
    "lol": LowLightLayout(
        name="lol", title="LOL", env_var="LOL_DATA_DIR", subset=None,
        split_dirs=(("train", "our485"), ("test", "eval15")), low_dir="low", high_dir="high",
        size=(400, 600), counts=(("train", 485), ("test", 15)),
    ),
    "lol_v2_real": LowLightLayout(
        name="lol_v2_real", title="LOL-v2-real", env_var="LOLV2_DATA_DIR", subset="Real_captured",
        split_dirs=(("train", "Train"), ("test", "Test")), low_dir="Low", high_dir="Normal",
        low_prefix="low", high_prefix="normal", size=(400, 600), counts=(("train", 689), ("test", 100)),
    ),
    "lol_v2_synthetic": LowLightLayout(
        name="lol_v2_synthetic", title="LOL-v2-synthetic", env_var="LOLV2_DATA_DIR", subset="Synthetic",
        split_dirs=(("train", "Train"), ("test", "Test")), low_dir="Low", high_dir="Normal",
        size=(384, 384), counts=(("train", 900), ("test", 100)),
    ),
}


def get_layout(name: str) -> LowLightLayout:
    if name not in LAYOUTS:
        raise ValueError(f"dataset must be one of {sorted(LAYOUTS)}, got {name!r}")
    return LAYOUTS[name]


def read_rgb(path: Path) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB: OpenCV's ``imread`` (3-channel BGR) converted to RGB, as the release reads.

    DatasetError naming the file when it is missing, undecodable or empty.
    """
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None or image.size == 0:
        found = "does not exist" if data is None else "could not be decoded"
        raise DatasetError(f"{describe_path(path)}: expected a readable {IMAGE_SUFFIX} image; the file {found}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
