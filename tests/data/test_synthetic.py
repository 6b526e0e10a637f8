"""The synthetic Synapse generator: release format, determinism, content, atomic writes, cache."""
from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datamodules import synthetic
from datamodules.synapse import SynapseDataModule
from datamodules.synthetic import (
    MARKER_FILE,
    SyntheticSynapse,
    default_cache_dir,
    ensure_synthetic_synapse,
    write_synthetic_synapse,
)

from .conftest import SMALL


def _arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for path in sorted((root / "train_npz").glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = (z["image"], z["label"])
    for path in sorted((root / "test_vol_h5").glob("*.npy.h5")):
        with h5py.File(path) as f:
            out[path.name] = (f["image"][()], f["label"][()])
    return out


def _train_volume(root: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    paths = sorted((root / "train_npz").glob(f"{case}_slice*.npz"))
    images, labels = [], []
    for p in paths:
        with np.load(p) as z:
            images.append(z["image"])
            labels.append(z["label"])
    return np.stack(images), np.stack(labels)


def test_files_follow_the_release_format(synthetic_root):
    root = synthetic_root
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train_npz", "test_vol_h5", "lists_Synapse", MARKER_FILE]
    )
    train_names = (root / "lists_Synapse" / "train.txt").read_text().splitlines()
    assert train_names[:2] == ["case0005_slice000", "case0005_slice001"]
    assert train_names[-1] == "case0006_slice005" and len(train_names) == 12
    assert sorted(p.name for p in (root / "train_npz").iterdir()) == sorted(f"{n}.npz" for n in train_names)
    assert (root / "lists_Synapse" / "test_vol.txt").read_text() == "case0008\ncase0022\n"
    assert sorted(p.name for p in (root / "test_vol_h5").iterdir()) == ["case0008.npy.h5", "case0022.npy.h5"]

    with np.load(root / "train_npz" / "case0006_slice003.npz") as z:
        assert sorted(z.files) == ["image", "label"]
        image, label = z["image"], z["label"]
    assert image.dtype == np.float32 and image.shape == (48, 48)
    assert label.dtype == np.uint8 and label.shape == (48, 48)
    assert 0.0 <= image.min() and image.max() <= 1.0
    with h5py.File(root / "test_vol_h5" / "case0008.npy.h5") as f:
        assert sorted(f.keys()) == ["image", "label"]
        assert f["image"].dtype == np.float32 and f["image"].shape == (6, 48, 48)
        assert f["label"].dtype == np.uint8 and f["label"].shape == (6, 48, 48)
        assert int(f["label"][()].max()) <= 8
    assert json.loads((root / MARKER_FILE).read_text())["slices_per_case"] == 6


def test_generation_is_deterministic(tmp_path, synthetic_root):
    again = _arrays(write_synthetic_synapse(tmp_path / "again", **SMALL))
    first = _arrays(synthetic_root)
    assert again.keys() == first.keys() and len(first) == 14
    for name, (image, label) in first.items():
        assert image.dtype == again[name][0].dtype and label.dtype == again[name][1].dtype
        assert image.tobytes() == again[name][0].tobytes(), name
        assert label.tobytes() == again[name][1].tobytes(), name
    other = _arrays(write_synthetic_synapse(tmp_path / "other", **{**SMALL, "seed": 1}))
    assert not np.array_equal(other["case0005_slice002.npz"][0], first["case0005_slice002.npz"][0])


def test_default_set_is_fast_and_has_the_expected_content(tmp_path):
    start = time.perf_counter()
    root = write_synthetic_synapse(tmp_path / "default")
    assert time.perf_counter() - start < 10.0
    assert len(list((root / "train_npz").iterdir())) == 4 * 16
    assert (root / "lists_Synapse" / "test_vol.txt").read_text().split() == ["case0008", "case0022"]

    images, labels = zip(*(_train_volume(root, f"case{n:04d}") for n in (5, 6, 7, 9)), strict=True)
    image, label = np.concatenate(images), np.concatenate(labels)
    assert image.shape == (64, 128, 128)
    fractions = np.bincount(label.ravel(), minlength=9) / label.size
    assert np.all(fractions > 0), fractions  # all nine classes occur
    liver = fractions[5]
    for small in (1, 2, 6):  # aorta, gallbladder, pancreas are small next to the liver
        assert fractions[small] < liver / 8, fractions
    assert fractions[0] > 0.5  # background dominates, as in CT

    # organs come and go along the slices (3-D shapes), so slices without an organ occur
    present = np.stack([(label == c).any(axis=(1, 2)) for c in range(1, 9)])  # (8, 64)
    assert (present.sum(axis=1) < 64).sum() >= 6, present.sum(axis=1)
    # the gallbladder is missing from every 4th training case and from the last test volume
    assert not (labels[3] == 2).any() and (labels[0] == 2).any()
    with h5py.File(root / "test_vol_h5" / "case0022.npy.h5") as f:
        assert 2 not in np.unique(f["label"][()])
    with h5py.File(root / "test_vol_h5" / "case0008.npy.h5") as f:
        assert 2 in np.unique(f["label"][()])

    # class intensities differ but overlap (intensity alone is not enough)
    means = np.array([image[label == c].mean() for c in range(1, 9)])
    gaps = np.abs(means[:, None] - means[None, :]) + np.eye(8)
    gaps[2, 3] = gaps[3, 2] = 1.0  # the two kidneys look alike: only their side tells them apart
    assert gaps.min() > 0.03, means
    liver_px, spleen_px = image[label == 5], image[label == 7]
    assert np.percentile(liver_px, 95) > np.percentile(spleen_px, 5)

    # shapes vary smoothly: the smaller of two neighbouring cross-sections lies mostly inside the larger
    for c in (3, 5, 7, 8):
        masks = labels[0] == c
        checked = 0
        for z in range(15):
            a, b = masks[z], masks[z + 1]
            if a.sum() > 30 and b.sum() > 30:
                assert (a & b).sum() / min(a.sum(), b.sum()) > 0.8, (c, z)
                checked += 1
        assert checked >= 4


def test_every_organ_in_every_case_on_request(tmp_path):
    root = ensure_synthetic_synapse(tmp_path, num_train_cases=4, absent_gallbladder=False)
    assert root.name.endswith("_allorgans")
    assert json.loads((root / "synthetic.json").read_text())["absent_gallbladder"] is False
    assert all((_train_volume(root, f"case{n:04d}")[1] == 2).any() for n in (5, 6, 7, 9))
    for case in ("case0008", "case0022"):
        with h5py.File(root / "test_vol_h5" / f"{case}.npy.h5") as f:
            assert 2 in np.unique(f["label"][()]), case
    default = ensure_synthetic_synapse(tmp_path, num_train_cases=4)  # a separate set; its marker is unchanged
    assert default != root and "absent_gallbladder" not in json.loads((default / "synthetic.json").read_text())
    first = [root / "test_vol_h5" / "case0008.npy.h5", default / "test_vol_h5" / "case0008.npy.h5"]
    with h5py.File(first[0]) as a, h5py.File(first[1]) as b:  # a case that keeps its organs is the same
        np.testing.assert_array_equal(a["image"][()], b["image"][()])


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_file = synthetic.h5py.File

    def failing_file(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt("simulated interruption while writing the test volumes")

    monkeypatch.setattr(synthetic.h5py, "File", failing_file)
    target = tmp_path / "synapse"
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_synapse(target, **SMALL)
    assert calls["n"] == 1
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the partial folder is removed too
    monkeypatch.setattr(synthetic.h5py, "File", real_file)

    # a partial folder left by a killed process is ignored, and a complete set is written beside it
    stale = tmp_path / ".synapse.partial-99999-deadbeef"
    (stale / "train_npz").mkdir(parents=True)
    root = write_synthetic_synapse(target, **SMALL)
    assert (root / MARKER_FILE).is_file() and len(list((root / "train_npz").iterdir())) == 12


def test_write_is_idempotent_and_refuses_foreign_folders(tmp_path, synthetic_root):
    marker = synthetic_root / MARKER_FILE
    before = marker.stat().st_mtime_ns
    assert write_synthetic_synapse(synthetic_root, **SMALL) == synthetic_root
    assert marker.stat().st_mtime_ns == before  # nothing rewritten
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine.*refusing to overwrite"):
        write_synthetic_synapse(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError):  # same folder, other parameters
        write_synthetic_synapse(synthetic_root, **{**SMALL, "seed": 5})


def test_cache_dir_and_ensure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("REPRO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "repro-seg"
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))

    kwargs = {"num_train_cases": 1, "num_test_cases": 1, "slices_per_case": 3, "size": 32, "seed": 3}
    root = ensure_synthetic_synapse(**kwargs)
    assert root.parent == tmp_path / "cache"
    assert root.name == "synapse_synthetic_v2_train1_test1_slices3_size32_seed3"
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and str(root) in lines[0]
    assert ensure_synthetic_synapse(**kwargs) == root
    assert capsys.readouterr().out == ""  # found, not regenerated
    assert ensure_synthetic_synapse(tmp_path / "elsewhere", **kwargs).parent == tmp_path / "elsewhere"

    # a folder under our cache name without a matching marker is regenerated, not trusted
    (root / MARKER_FILE).unlink()
    (root / "train_npz" / "case0005_slice000.npz").unlink()
    assert ensure_synthetic_synapse(**kwargs) == root
    assert (root / "train_npz" / "case0005_slice000.npz").is_file() and (root / MARKER_FILE).is_file()


def test_synthetic_datamodule_reads_through_the_real_loader(tmp_path, capsys):
    knobs = {"num_train_cases": 1, "num_test_cases": 1, "slices_per_case": 5, "size": 40, "seed": 2}
    dm = SynapseDataModule(synthetic=SyntheticSynapse(cache_dir=str(tmp_path), **knobs), img_size=32, batch_size=2,
                           val_volumes=1)
    assert dm.is_synthetic is True and SynapseDataModule(data_dir="x").is_synthetic is False
    assert dm.hparams["synthetic"].seed == 2 and dm.hparams["img_size"] == 32
    with pytest.raises(ValueError, match="not both"):
        SynapseDataModule(data_dir="x", synthetic=SyntheticSynapse())
    dm.prepare_data()
    assert "Synthetic Synapse data set written to" in capsys.readouterr().out
    dm.setup("fit")
    dm.setup("test")
    assert dm.num_classes == 9 and dm.spatial_dims == 2
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (2, 1, 32, 32) and train["label"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["case"] == ["case0008", "case0008"]
    test = next(iter(dm.test_dataloader()))
    assert test["image"].shape == (1, 5, 40, 40) and test["case"] == ["case0008"]

    # the same batches as SynapseDataModule pointed at the generated folder
    real = SynapseDataModule(data_dir=str(dm.root), img_size=32, batch_size=2)
    real.setup("fit")
    assert torch.equal(next(iter(real.train_dataloader()))["image"], train["image"])

    # setup() alone also generates (e.g. when prepare_data ran on another node)
    fresh = SynapseDataModule(synthetic=SyntheticSynapse(cache_dir=str(tmp_path / "new"), **knobs), img_size=16,
                              batch_size=2)
    fresh.setup("fit")
    assert len(fresh.train_dataset) == 5
