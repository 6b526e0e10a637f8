"""LOL / LOL-v2 low-light pairs: layouts, pairing, augmentation, seeding, data checks, synthetic writer."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datamodules.checks import DataCheckError
from datamodules.errors import DatasetError
from datamodules.lol import LowLightPairsDataModule, crop_flip, log_low_transform, resize_crop_flip
from datamodules.lol_layout import get_layout, read_rgb
from datamodules.synthetic_lol import SyntheticLowLight, ensure_synthetic_lol, write_synthetic_lol

SMALL = {"num_train": 5, "num_test": 2, "height": 40, "width": 56, "seed": 0}
DATASETS = ("lol", "lol_v2_real", "lol_v2_synthetic")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("lol")
    return {name: write_synthetic_lol(base / name, name, **SMALL) for name in DATASETS}


def _dm(root: Path, dataset: str = "lol", **kwargs) -> LowLightPairsDataModule:
    kwargs.setdefault("crop_size", 24)
    return LowLightPairsDataModule(dataset, data_dir=str(root), **kwargs)


# ----------------------------------------------------------------------------- layouts and pairing


def test_release_layouts_on_disk(roots):
    names = {name: sorted(str(p.relative_to(root)) for p in root.rglob("*.png")) for name, root in roots.items()}
    assert "our485/low/1.png" in names["lol"] and "our485/high/1.png" in names["lol"]
    assert "eval15/low/6.png" in names["lol"] and "eval15/high/7.png" in names["lol"]
    assert "Real_captured/Train/Low/low00001.png" in names["lol_v2_real"]
    assert "Real_captured/Test/Normal/normal00007.png" in names["lol_v2_real"]
    assert all(n.startswith("Synthetic/") for n in names["lol_v2_synthetic"])
    assert {n.split("/")[1] for n in names["lol_v2_synthetic"]} == {"Train", "Test"}
    assert all(len(v) == 2 * (SMALL["num_train"] + SMALL["num_test"]) for v in names.values())


@pytest.mark.parametrize("dataset", DATASETS)
def test_pairs_are_matched_by_key_and_batches_are_rgb_in_unit_range(roots, dataset):
    dm = _dm(roots[dataset], dataset, batch_size=2)
    dm.setup("fit")
    layout = get_layout(dataset)
    assert len(dm.train_dataset) == 5 and len(dm.val_dataset) == 2  # validation = the test split
    for pair in dm.train_dataset.pairs:
        assert layout.key(pair.low.name, layout.low_prefix) == layout.key(pair.high.name, layout.high_prefix)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 5 pairs, batch 2, the last incomplete batch dropped (as released)
    for b in batches:
        assert b["image"].shape == b["target"].shape == (2, 3, 24, 24) and b["image"].dtype == torch.float32
        assert 0.0 <= b["image"].min() and b["target"].max() <= 1.0 and len(b["case"]) == 2
        assert b["image"].mean() < 0.5 * b["target"].mean()  # low-light really darker
    ev = next(iter(dm.val_dataloader()))
    assert ev["image"].shape == ev["target"].shape == (1, 3, 40, 56)
    # RGB order: the batch equals OpenCV's BGR file content reversed on the channel axis
    pair = dm.val_dataset.pairs[0]
    bgr = cv2.imread(str(pair.high))
    assert torch.equal(ev["target"][0], torch.from_numpy(bgr[..., ::-1].transpose(2, 0, 1) / 255.0).float())
    assert ev["case"] == [pair.key]


def test_lol_v2_root_may_be_the_subset_folder_and_env_var(roots, monkeypatch):
    dm = _dm(roots["lol_v2_real"] / "Real_captured", "lol_v2_real")
    dm.setup("test")
    assert len(dm.test_dataset) == 2
    monkeypatch.setenv("LOL_DATA_DIR", str(roots["lol"]))
    env = LowLightPairsDataModule("lol", crop_size=24)
    env.setup("test")
    assert [p.key for p in env.test_dataset.pairs] == ["6", "7"]
    monkeypatch.delenv("LOL_DATA_DIR")
    with pytest.raises(DatasetError, match="LOL_DATA_DIR"):
        LowLightPairsDataModule("lol").setup("test")


def test_missing_folder_and_empty_split_are_clear(tmp_path, roots):
    copy = Path(shutil.copytree(roots["lol"], tmp_path / "lol"))
    shutil.rmtree(copy / "eval15" / "high")
    with pytest.raises(DatasetError, match=r"eval15/high: folder not found"):
        _dm(copy).setup("test")
    (copy / "eval15" / "high").mkdir()
    with pytest.raises(DatasetError, match="no low/normal-light pair found"):
        _dm(copy, data_check="off").setup("test")


# ----------------------------------------------------------------------------- augmentation


def test_crop_flip_is_the_stage3_crop_and_horizontal_flip():
    low = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    high = 255 - low
    seen_flip = set()
    for seed in range(40):
        a, b = crop_flip(low, high, 6, np.random.default_rng(seed))
        assert a.shape == b.shape == (6, 6, 3) and np.array_equal(b, 255 - a)  # same window, same flip
        flipped = a[0, 0, 0] > a[0, 1, 0]
        seen_flip.add(bool(flipped))
        window = a[:, ::-1] if flipped else a
        top, left = divmod(int(window[0, 0, 0]) // 3, 12)
        assert np.array_equal(window, low[top:top + 6, left:left + 6])
    assert seen_flip == {True, False}
    small, _ = crop_flip(low, high, 16, np.random.default_rng(0))  # not larger than the crop: the whole side
    assert small.shape == (10, 12, 3)
    rotated = {crop_flip(low, high, 6, np.random.default_rng(s), rotate=True)[0].shape for s in range(20)}
    assert rotated == {(6, 6, 3)}


def test_resize_crop_flip_is_the_stage2_random_bicubic_resize():
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    high = rng.random((30, 45, 3)).astype(np.float32)
    a, b = resize_crop_flip(low, high, 20, np.random.default_rng(3))
    assert a.shape == b.shape == (20, 20, 3) and a.dtype == np.uint8 and b.dtype == np.float32
    # the draw: shorter side s ~ U{20..30}; s = 30 is the identity resize and then a plain crop
    for seed in range(60):
        r = np.random.default_rng(seed)
        s = int(r.integers(20, 31))
        if s == 30:
            top, left = int(r.integers(0, 11)), int(r.integers(0, 26))
            flip = r.random() < 0.5
            want = high[top:top + 20, left:left + 20]
            got = resize_crop_flip(low, high, 20, np.random.default_rng(seed))[1]
            assert np.allclose(got, want[:, ::-1] if flip else want, atol=1e-6)
            break
    else:
        pytest.fail("no seed drew the identity resize")
    # bicubic overshoot of the float image is kept, as released (not clipped to [0, 1])
    edge = np.zeros((30, 30, 3), np.float32)
    edge[:, 15:] = 1.0
    out = [resize_crop_flip(edge.astype(np.uint8), edge, 28, np.random.default_rng(s))[1] for s in range(10)]
    assert max(o.max() for o in out) > 1.0 or min(o.min() for o in out) < 0.0


def test_log_low_option_applies_the_release_transform(roots):
    plain, logged = _dm(roots["lol"], data_check="off"), _dm(roots["lol"], data_check="off", log_low=True)
    plain.setup("test")
    logged.setup("test")
    x = plain.test_dataset[0]["image"]
    assert torch.allclose(logged.test_dataset[0]["image"], torch.log(torch.clamp(x + 1e-3, min=1e-3)))
    assert torch.equal(log_low_transform(torch.zeros(1)), torch.log(torch.tensor([1e-3])))


def test_seeding_is_deterministic_any_num_workers_and_epochs_differ(roots):
    def batches(num_workers: int, epoch: int, seed: int = 10, augment: str = "resize_crop_flip") -> torch.Tensor:
        dm = _dm(roots["lol"], batch_size=2, num_workers=num_workers, seed=seed, train_augment=augment,
                 data_check="off")
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["image"] for b in loader])

    ref = batches(0, 0)
    assert torch.equal(ref, batches(2, 0))
    assert not torch.equal(ref, batches(0, 1))
    assert not torch.equal(ref, batches(0, 0, seed=11))
    assert torch.equal(batches(0, 1, augment="crop_flip"), batches(1, 1, augment="crop_flip"))


def test_holdout_selection_removes_pairs_from_training(roots):
    dm = _dm(roots["lol"], select_on="holdout", val_fraction=0.4, data_check="off")
    dm.setup("fit")
    train, val = {p.key for p in dm.train_dataset.pairs}, {p.key for p in dm.val_dataset.pairs}
    assert len(val) == 2 and not train & val and len(train | val) == 5
    assert "not the release's choice" in dm.selection_note
    assert "the release's choice" in _dm(roots["lol"]).selection_note


# ----------------------------------------------------------------------------- data check


def test_broken_set_gives_one_error_listing_every_broken_file(roots, tmp_path):
    root = Path(shutil.copytree(roots["lol_v2_real"], tmp_path / "v2"))
    train = root / "Real_captured" / "Train"
    broken = {
        "truncated": train / "Low" / "low00001.png",
        "partnerless": train / "Low" / "low00002.png",
        "size": train / "Normal" / "normal00003.png",
        "gray": train / "Normal" / "normal00004.png",
        "empty": train / "Low" / "low00005.png",
    }
    data = broken["truncated"].read_bytes()
    broken["truncated"].write_bytes(data[: len(data) // 2])
    (train / "Normal" / "normal00002.png").unlink()
    cv2.imwrite(str(broken["size"]), np.zeros((20, 56, 3), np.uint8))
    cv2.imwrite(str(broken["gray"]), np.zeros((40, 56), np.uint8))
    broken["empty"].write_bytes(b"")
    with pytest.raises(DataCheckError) as info:
        _dm(root, "lol_v2_real").setup("fit")
    message = str(info.value)
    assert message.count("\n") == len(broken) and message.startswith("5 broken files in")
    assert set(info.value.broken_files) == set(broken.values())
    assert "its partner in" in message and "Normal" in message  # low00002 lost its normal-light partner
    assert "the size of its low-light partner" in message and "20x56" in message
    assert "an RGB (3-channel) PNG" in message and "empty file" in message and "truncated" in message
    _dm(root, "lol_v2_real").setup("test")  # the test split is intact

    with pytest.raises(DatasetError, match="could not be decoded"):  # data_check off: the reader still refuses
        dm = _dm(root, "lol_v2_real", data_check="off", train_augment="none")
        dm.setup("fit")
        [dm.train_dataset[i] for i in range(len(dm.train_dataset))]


def test_reader_checks_pair_sizes_without_the_whole_set_check(roots, tmp_path):
    root = Path(shutil.copytree(roots["lol"], tmp_path / "lol"))
    cv2.imwrite(str(root / "eval15" / "high" / "6.png"), np.zeros((20, 20, 3), np.uint8))
    dm = _dm(root, data_check="off")
    dm.setup("test")
    with pytest.raises(DatasetError, match="expected the size of its low-light partner"):
        dm.test_dataset[0]
    assert read_rgb(root / "eval15" / "low" / "7.png").shape == (40, 56, 3)


# ----------------------------------------------------------------------------- synthetic writer


def test_synthetic_writer_is_deterministic_idempotent_and_refuses_foreign_folders(roots, tmp_path):
    again = write_synthetic_lol(tmp_path / "again", "lol", **SMALL)
    for path in roots["lol"].rglob("*.png"):
        assert (again / path.relative_to(roots["lol"])).read_bytes() == path.read_bytes()
    stamp = (again / "synthetic.json").stat().st_mtime_ns
    assert write_synthetic_lol(again, "lol", **SMALL) == again
    assert (again / "synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        write_synthetic_lol(again, "lol", **{**SMALL, "seed": 1})
    other = write_synthetic_lol(tmp_path / "other", "lol", **{**SMALL, "seed": 1})
    assert (other / "our485/low/1.png").read_bytes() != (again / "our485/low/1.png").read_bytes()


def test_synthetic_option_generates_once_and_is_read_through_the_real_path(tmp_path, capsys):
    option = SyntheticLowLight(num_train=3, num_test=1, height=32, width=32, cache_dir=str(tmp_path / "c"))
    dm = LowLightPairsDataModule("lol_v2_synthetic", synthetic=option, crop_size=16, batch_size=1)
    dm.setup("fit")
    assert "written to" in capsys.readouterr().out and dm.is_synthetic
    assert next(iter(dm.train_dataloader()))["image"].shape == (1, 3, 16, 16)
    assert ensure_synthetic_lol(str(tmp_path / "c"), "lol_v2_synthetic", num_train=3, num_test=1, height=32,
                                width=32, seed=0) == dm.root
    assert "written to" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="not both"):
        LowLightPairsDataModule("lol", data_dir=str(tmp_path), synthetic=option)
