"""SynapseDataModule on a small synthetic set: batches, augmentation, determinism, bad data."""
from __future__ import annotations

import hashlib
import math
import re
import shutil
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from scipy import ndimage

from datamodules.errors import DatasetError
from datamodules.sampling import EpochShuffleSampler
from datamodules.synapse import (
    SYNAPSE_CLASS_NAMES,
    SYNAPSE_ENV_VAR,
    SynapseDataModule,
)
from datamodules.transforms import IntegerAngleRotate, reseed, synapse_train_transform

N_TRAIN = 12  # slices in the small set (conftest.SMALL)
DEPTH, SIZE = 6, 48


def _first_batch(loader):
    return next(iter(loader))


def _digest(t: torch.Tensor) -> str:
    return hashlib.md5(t.numpy().tobytes()).hexdigest()


# ----------------------------------------------------------------------------- batches


def test_metadata(make_dm, synthetic_root):
    dm = make_dm(synthetic_root)
    assert dm.num_classes == 9
    assert dm.class_names == SYNAPSE_CLASS_NAMES
    assert SYNAPSE_CLASS_NAMES[0] == "background" and SYNAPSE_CLASS_NAMES[5] == "liver"
    assert SYNAPSE_CLASS_NAMES[8] == "stomach" and len(SYNAPSE_CLASS_NAMES) == 9
    assert dm.spatial_dims == 2
    assert dm.batch_size == 4
    assert dm.is_synthetic is False


def test_train_loader_shapes_and_last_batch(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, batch_size=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == math.ceil(N_TRAIN / 5) == 3  # the last, incomplete batch is kept
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [5, 5, 2]
    for b in batches:
        assert set(b) == {"image", "label"}
        assert b["image"].dtype == torch.float32 and b["image"].shape[1:] == (1, 32, 32)
        assert b["label"].dtype == torch.int64 and b["label"].shape[1:] == (32, 32)
        assert int(b["label"].min()) >= 0 and int(b["label"].max()) <= 8
    labels = torch.cat([b["label"] for b in batches])
    assert len(torch.unique(labels)) >= 5  # organs are really there


def test_no_augmentation_same_size_is_the_raw_slice(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, img_size=SIZE, augment=False)
    dm.setup("fit")
    ds = dm.train_dataset
    with np.load(ds.paths[3]) as z:
        image, label = z["image"], z["label"]
    item = ds[(0, 3)]
    np.testing.assert_array_equal(item["image"][0].numpy(), image)
    np.testing.assert_array_equal(item["label"].numpy(), label.astype(np.int64))


def test_no_augmentation_resize_is_scipy_zoom(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, img_size=32, augment=False)
    dm.setup("fit")
    ds = dm.train_dataset
    with np.load(ds.paths[5]) as z:
        image, label = z["image"], z["label"]
    item = ds[(0, 5)]
    np.testing.assert_allclose(item["image"][0].numpy(), ndimage.zoom(image, 32 / SIZE, order=3), atol=1e-6)
    np.testing.assert_array_equal(item["label"].numpy(), ndimage.zoom(label, 32 / SIZE, order=0))


def test_max_train_slices(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, max_train_slices=5)
    dm.setup("fit")
    names = (synthetic_root / "lists_Synapse" / "train.txt").read_text().split()
    assert [p.name for p in dm.train_dataset.paths] == [f"{n}.npz" for n in names[:5]]
    assert sum(b["image"].shape[0] for b in dm.train_dataloader()) == 5


def test_val_loader(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, val_volumes=1, batch_size=4)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert sum(len(b["case"]) for b in batches) == DEPTH  # every slice of the first test volume
    b = batches[0]
    assert set(b) == {"image", "label", "case", "slice"}
    assert b["image"].shape == (4, 1, 32, 32) and b["image"].dtype == torch.float32
    assert b["label"].shape == (4, 32, 32) and b["label"].dtype == torch.int64
    assert b["case"] == ["case0008"] * 4
    assert b["slice"].tolist() == [0, 1, 2, 3]
    assert torch.cat([x["slice"] for x in batches]).tolist() == list(range(DEPTH))
    with h5py.File(synthetic_root / "test_vol_h5" / "case0008.npy.h5") as f:
        vol_image, vol_label = f["image"][2], f["label"][2]
    np.testing.assert_allclose(b["image"][2, 0].numpy(), ndimage.zoom(vol_image, 32 / SIZE, order=3), atol=1e-6)
    np.testing.assert_array_equal(b["label"][2].numpy(), ndimage.zoom(vol_label, 32 / SIZE, order=0))


def test_val_loader_disabled_is_empty_list(make_dm, synthetic_root):
    dm = make_dm(synthetic_root)
    dm.setup("fit")
    assert dm.val_dataloader() == []
    assert dm.val_dataset is None


def test_test_loader_whole_volumes(make_dm, synthetic_root):
    dm = make_dm(synthetic_root)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert [b["case"] for b in batches] == [["case0008"], ["case0022"]]
    b = batches[1]
    assert b["image"].shape == (1, DEPTH, SIZE, SIZE) and b["image"].dtype == torch.float32
    assert b["label"].shape == (1, DEPTH, SIZE, SIZE) and b["label"].dtype == torch.int64
    with h5py.File(synthetic_root / "test_vol_h5" / "case0022.npy.h5") as f:
        np.testing.assert_array_equal(b["image"][0].numpy(), f["image"][()])
        np.testing.assert_array_equal(b["label"][0].numpy(), f["label"][()].astype(np.int64))


def test_env_var_fallback(make_dm, synthetic_root, monkeypatch):
    monkeypatch.setenv(SYNAPSE_ENV_VAR, str(synthetic_root))
    dm = make_dm(None)
    dm.setup("fit")
    assert dm.root == synthetic_root
    assert len(dm.train_dataset) == N_TRAIN
    # the argument wins over the variable
    monkeypatch.setenv(SYNAPSE_ENV_VAR, str(synthetic_root.parent / "elsewhere"))
    dm = make_dm(synthetic_root)
    dm.setup("fit")
    assert dm.root == synthetic_root


def test_list_dir_argument(make_dm, data_copy, tmp_path):
    lists = tmp_path / "my_lists"
    shutil.move(data_copy / "lists_Synapse", lists)
    dm = make_dm(data_copy, list_dir=str(lists))
    dm.setup()
    assert len(dm.train_dataset) == N_TRAIN and len(dm.test_dataset) == 2


# ----------------------------------------------------------------------------- augmentation


def _blocky(seed: int, size: int = 48, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """An image made of flat blocks whose label is a function of the intensity."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 9, (size // block, size // block))
    label = np.kron(levels, np.ones((block, block), dtype=np.int64)).astype(np.uint8)
    return (label / 8.0).astype(np.float32), label


def test_augmentation_keeps_image_and_label_aligned():
    image, label = _blocky(0)
    transform = synapse_train_transform(48)  # no resize: the relation must hold exactly
    changed = 0
    for s in range(150):
        reseed(transform, s)
        out = transform(image=image, mask=label)
        assert out["image"].dtype == np.float32 and out["mask"].dtype == np.uint8
        np.testing.assert_array_equal(np.round(out["image"] * 8).astype(np.uint8), out["mask"])
        changed += not np.array_equal(out["image"], image)
    assert 90 <= changed <= 140  # ~74 % of the draws change the image (no-op 25 %, angle 0 rare)


def test_augmentation_with_resize_keeps_valid_aligned_labels():
    image, label = _blocky(1)
    transform = synapse_train_transform(32)
    for s in range(40):
        reseed(transform, s)
        out = transform(image=image, mask=label)
        assert out["image"].shape == (32, 32) and out["mask"].shape == (32, 32)
        assert set(np.unique(out["mask"])) <= set(np.unique(label))
        agree = np.mean(np.clip(np.round(out["image"] * 8), 0, 8).astype(np.uint8) == out["mask"])
        assert agree > 0.8, (s, agree)


def test_augmentation_branch_frequencies_follow_the_official_code():
    """P(rot90+flip) = 0.5 (always a reflection), P(rotation) = 0.25, P(nothing) = 0.25."""
    rng = np.random.default_rng(0)
    image = rng.random((24, 24)).astype(np.float32)
    label = (image * 8).astype(np.uint8)
    reflections = [np.flip(np.rot90(image, k), a) for k in range(4) for a in range(2)]
    transform = synapse_train_transform(24)
    counts = {"reflection": 0, "identity": 0, "other": 0}
    n = 600
    for s in range(n):
        reseed(transform, s)
        out = transform(image=image, mask=label)["image"]
        if np.array_equal(out, image):
            counts["identity"] += 1
        elif any(np.array_equal(out, r) for r in reflections):
            counts["reflection"] += 1
        else:
            counts["other"] += 1
    assert abs(counts["reflection"] / n - 0.5) < 0.07, counts
    # identity: the no-op branch plus rotations by angles too small to move a 24 px image
    assert 0.2 < counts["identity"] / n < 0.36, counts
    assert 0.15 < counts["other"] / n < 0.3, counts


def test_rotation_angles_are_integers_in_half_open_range():
    rot = IntegerAngleRotate(limit=(-20, 20))
    rot.set_random_seed(0)
    angles = [rot.get_params_dependent_on_data({"shape": (16, 16)}, {})["angle"] for _ in range(3000)]
    assert all(a == int(a) for a in angles)
    assert min(angles) == -20 and max(angles) == 19  # like np.random.randint(-20, 20)
    assert len(set(angles)) == 40


def test_rotation_matches_scipy_order0_inside_the_field_of_view():
    rng = np.random.default_rng(3)
    image = rng.random((64, 64)).astype(np.float32) + 0.5  # no zeros inside, so the fill is recognisable
    rot = synapse_train_transform(64).transforms[0].transforms[1]  # the pipeline's rotation
    assert isinstance(rot, IntegerAngleRotate) and rot.limit == (-20, 20)
    rot.limit = (13, 14)  # always 13 degrees
    out = rot(image=image, mask=(image * 4).astype(np.uint8), force_apply=True)["image"]
    ref = ndimage.rotate(image, 13, order=0, reshape=False, mode="constant", cval=0.0)
    inside = (ref != 0) & (out != 0)
    assert inside.mean() > 0.8
    assert np.mean(out[inside] != ref[inside]) < 0.005


# ----------------------------------------------------------------------------- determinism


def test_item_is_a_pure_function_of_seed_epoch_index(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, seed=7)
    dm.setup("fit")
    ds = dm.train_dataset
    a = ds[(3, 5)]
    for i in range(N_TRAIN):  # history must not matter
        ds[(1, i)]
    b = ds[(3, 5)]
    dm2 = make_dm(synthetic_root, seed=7)
    dm2.setup("fit")
    c = dm2.train_dataset[(3, 5)]
    for x in (b, c):
        assert torch.equal(a["image"], x["image"]) and torch.equal(a["label"], x["label"])
    ds.set_epoch(3)
    assert torch.equal(ds[5]["image"], a["image"])  # plain integer index uses the dataset's epoch


def test_different_epochs_and_seeds_give_different_augmentations(make_dm, synthetic_root):
    dm = make_dm(synthetic_root, seed=7)
    dm.setup("fit")
    ds = dm.train_dataset
    differ_epoch = sum(not torch.equal(ds[(0, i)]["image"], ds[(1, i)]["image"]) for i in range(N_TRAIN))
    dm2 = make_dm(synthetic_root, seed=8)
    dm2.setup("fit")
    differ_seed = sum(
        not torch.equal(ds[(0, i)]["image"], dm2.train_dataset[(0, i)]["image"]) for i in range(N_TRAIN)
    )
    # two independent draws coincide with probability ~1/8 per item
    assert differ_epoch >= 6 and differ_seed >= 6, (differ_epoch, differ_seed)


def test_sampler_permutation_is_a_pure_function_of_seed_and_epoch():
    s = EpochShuffleSampler(50, seed=11)
    s.set_epoch(4)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(15)).tolist()
    assert list(s) == [(4, i) for i in expected]
    assert list(EpochShuffleSampler(50, seed=11, epoch=4)) == list(s)
    s.set_epoch(5)
    assert [i for _, i in s] != expected
    assert sorted(i for _, i in s) == list(range(50))
    assert len(s) == 50


def _epoch_batches(dm: SynapseDataModule, epoch: int) -> list[dict]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_num_workers_do_not_change_the_batches(make_dm, synthetic_root):
    dms = []
    for workers in (0, 2):
        dm = make_dm(synthetic_root, num_workers=workers, batch_size=5)
        dm.setup("fit")
        dms.append(dm)
    a, b = _epoch_batches(dms[0], 1), _epoch_batches(dms[1], 1)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    # and a different epoch is really different
    c = _epoch_batches(dms[0], 2)
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_iterating_does_not_consume_the_global_torch_rng(make_dm, synthetic_root, workers):
    dm = make_dm(synthetic_root, num_workers=workers)
    dm.setup("fit")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for _ in dm.train_dataloader():
        pass
    assert torch.equal(state, torch.get_rng_state())


class _Recorder(L.LightningModule):
    """Records a digest of every training batch; one 1x1 conv so there is something to fit."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(1, 9, 1)
        self.seen: list[tuple[int, str]] = []
        self.val_batches = 0

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, _digest(batch["image"]) + _digest(batch["label"])))
        return torch.nn.functional.cross_entropy(self.head(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, max_epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_lightning_fit_sets_epochs_and_skips_empty_validation(make_dm, synthetic_root, tmp_path):
    dm = make_dm(synthetic_root, batch_size=5)
    model = _Recorder()
    _trainer(tmp_path, 2, enable_checkpointing=False).fit(model, datamodule=dm)
    assert model.val_batches == 0  # val_volumes=0 -> [] -> no validation
    ref = make_dm(synthetic_root, batch_size=5)
    ref.setup("fit")
    expected = [(e, _digest(b["image"]) + _digest(b["label"])) for e in (0, 1) for b in _epoch_batches(ref, e)]
    assert model.seen == expected

    dm = make_dm(synthetic_root, batch_size=5, val_volumes=1, max_train_slices=5)
    model = _Recorder()
    _trainer(tmp_path, 1, enable_checkpointing=False).fit(model, datamodule=dm)
    assert model.val_batches == math.ceil(DEPTH / 5)


def test_resume_at_epoch_boundary_replays_the_same_batches(make_dm, synthetic_root, tmp_path):
    """Lightning builds the first iterator (and prefetches with workers) before ``set_epoch``."""
    ckpt_dir = tmp_path / "ckpt"
    full = _Recorder()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, filename="{epoch}")
    _trainer(tmp_path, 3, callbacks=[checkpoint]).fit(full, datamodule=make_dm(synthetic_root, num_workers=2))
    resumed = _Recorder()
    _trainer(tmp_path / "resumed", 3, enable_checkpointing=False).fit(
        resumed, datamodule=make_dm(synthetic_root, num_workers=2), ckpt_path=ckpt_dir / "epoch=0.ckpt"
    )
    per_epoch = math.ceil(N_TRAIN / 4)
    assert len(full.seen) == 3 * per_epoch
    assert resumed.seen == full.seen[per_epoch:]
    assert torch.equal(resumed.head.weight, full.head.weight)


# ----------------------------------------------------------------------------- bad data


def _err(path: Path | str) -> str:
    return re.escape(str(path))


def test_missing_root_names_the_env_var(make_dm, monkeypatch):
    monkeypatch.delenv(SYNAPSE_ENV_VAR, raising=False)
    with pytest.raises(DatasetError, match=f"data_dir.*{SYNAPSE_ENV_VAR}.*train_npz"):
        make_dm(None).setup("fit")


def test_root_that_does_not_exist(make_dm, tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=_err(missing) + ".*data_dir argument.*does not exist"):
        make_dm(missing).setup("fit")
    monkeypatch.setenv(SYNAPSE_ENV_VAR, str(missing))
    with pytest.raises(DatasetError, match=_err(missing) + f".*{SYNAPSE_ENV_VAR}.*does not exist"):
        make_dm(None).setup("fit")


@pytest.mark.parametrize(("folder", "stage"), [("train_npz", "fit"), ("test_vol_h5", "test")])
def test_missing_data_folder(make_dm, data_copy, folder, stage):
    shutil.rmtree(data_copy / folder)
    with pytest.raises(DatasetError, match=_err(data_copy / folder) + ".*folder not found.*expected"):
        make_dm(data_copy).setup(stage)


def test_missing_test_folder_also_fails_for_validation(make_dm, data_copy):
    shutil.rmtree(data_copy / "test_vol_h5")
    with pytest.raises(DatasetError, match="test_vol_h5"):
        make_dm(data_copy, val_volumes=1).setup("fit")


@pytest.mark.parametrize(("name", "stage"), [("train.txt", "fit"), ("test_vol.txt", "test")])
def test_missing_list_file(make_dm, data_copy, name, stage):
    (data_copy / "lists_Synapse" / name).unlink()
    pattern = _err(data_copy / "lists_Synapse" / name) + ".*not found.*TransUNet.*lists/lists_Synapse.*list_dir"
    with pytest.raises(DatasetError, match=pattern):
        make_dm(data_copy).setup(stage)


def test_empty_list_file(make_dm, data_copy):
    (data_copy / "lists_Synapse" / "train.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=_err(data_copy / "lists_Synapse" / "train.txt") + ".*empty"):
        make_dm(data_copy).setup("fit")


def test_listed_slice_missing(make_dm, data_copy):
    victim = data_copy / "train_npz" / "case0006_slice002.npz"
    victim.unlink()
    with pytest.raises(DatasetError, match=_err(victim) + ".*train.txt does not exist.*1 of 12"):
        make_dm(data_copy).setup("fit")


def test_listed_volume_missing(make_dm, data_copy):
    victim = data_copy / "test_vol_h5" / "case0022.npy.h5"
    victim.unlink()
    with pytest.raises(DatasetError, match=_err(victim) + ".*test_vol.txt does not exist"):
        make_dm(data_copy).setup("test")
    make_dm(data_copy, val_volumes=1).setup("fit")  # only the first volume is needed for validation


def test_val_volumes_larger_than_the_list(make_dm, data_copy):
    with pytest.raises(DatasetError, match=r"test_vol.txt.*val_volumes=3.*2 listed"):
        make_dm(data_copy, val_volumes=3).setup("fit")


def _npz_cases():
    good = np.full((8, 8), 0.5, dtype=np.float32)
    lab = np.zeros((8, 8), dtype=np.uint8)
    nan = good.copy()
    nan[1, 2] = np.nan
    inf = good.copy()
    inf[0, 0] = np.inf
    big = lab.copy()
    big[3, 3] = 9
    neg = lab.astype(np.int16)
    neg[0, 1] = -1
    half = lab.astype(np.float32)
    half[2, 2] = 2.5
    return {
        "missing_label": (
            {"image": good, "mask": lab},
            r"keys 'image' and 'label', missing \['label'\]; found keys \['image', 'mask'\]",
        ),
        "missing_image": ({"label": lab}, r"missing \['image'\]; found keys \['label'\]"),
        "image_3d": ({"image": good[None], "label": lab}, r"expected a 2-D image \(H, W\), found shape \(1, 8, 8\)"),
        "shape_mismatch": (
            {"image": good, "label": lab[:7]},
            r"label to have the image's shape \(8, 8\), found label shape \(7, 8\)",
        ),
        "label_too_big": ({"image": good, "label": big}, r"integers in \[0, 8\] \(9 classes\).*found values \[9\]"),
        "label_negative": ({"image": good, "label": neg}, r"integers in \[0, 8\].*found values \[-1\]"),
        "label_fractional": ({"image": good, "label": half}, r"integers in \[0, 8\].*non-integer values \[2.5\]"),
        "nan": ({"image": nan, "label": lab}, r"expected finite intensities.*found 1 NaN and 0 inf"),
        "inf": ({"image": inf, "label": lab}, r"expected finite intensities.*found 0 NaN and 1 inf"),
    }


@pytest.mark.parametrize("case", list(_npz_cases()))
def test_bad_npz_content_fails_when_loaded(make_dm, data_copy, case):
    arrays, pattern = _npz_cases()[case]
    dm = make_dm(data_copy, img_size=8)
    dm.setup("fit")  # existence only: content is checked per item
    victim = dm.train_dataset.paths[4]
    np.savez(victim, **arrays)
    dm.train_dataset[(0, 3)]  # other slices still load
    with pytest.raises(DatasetError, match=_err(victim) + ".*" + pattern):
        dm.train_dataset[(0, 4)]


def test_corrupt_npz(make_dm, data_copy):
    dm = make_dm(data_copy)  # (with workers torch re-raises the same type, but shutting them down takes 10 s)
    dm.setup("fit")
    victim = dm.train_dataset.paths[0]
    victim.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match=_err(victim) + ".*could not be read as a NumPy .npz"):
        dm.train_dataset[0]
    with pytest.raises(DatasetError, match=_err(victim)):  # also through the loader
        list(dm.train_dataloader())


def _write_h5(path: Path, **arrays) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def _h5_cases():
    img = np.full((3, 8, 8), 0.5, dtype=np.float32)
    lab = np.zeros((3, 8, 8), dtype=np.uint8)
    big = lab.copy()
    big[1, 0, 0] = 12
    nan = img.copy()
    nan[2, 1, 1] = np.nan
    return {
        "missing_label": (
            {"image": img, "labels": lab},
            r"datasets 'image' and 'label', missing \['label'\]; found keys \['image', 'labels'\]",
        ),
        "image_2d": (
            {"image": img[0], "label": lab[0]},
            r"expected a 3-D image volume \(slices, H, W\), found shape \(8, 8\)",
        ),
        "shape_mismatch": (
            {"image": img, "label": lab[:2]},
            r"label to have the image's shape \(3, 8, 8\), found label shape \(2, 8, 8\)",
        ),
        "label_too_big": ({"image": img, "label": big}, r"integers in \[0, 8\].*found values \[12\]"),
        "nan": ({"image": nan, "label": lab}, r"expected finite intensities.*found 1 NaN"),
    }


@pytest.mark.parametrize("case", list(_h5_cases()))
def test_bad_h5_content_fails_when_loaded(make_dm, data_copy, case):
    arrays, pattern = _h5_cases()[case]
    victim = data_copy / "test_vol_h5" / "case0022.npy.h5"
    dm = make_dm(data_copy)
    dm.setup("test")
    _write_h5(victim, **arrays)
    dm.test_dataset[0]  # the other volume is fine
    with pytest.raises(DatasetError, match=_err(victim) + ".*" + pattern):
        dm.test_dataset[1]


def test_bad_h5_in_validation(make_dm, data_copy):
    victim = data_copy / "test_vol_h5" / "case0008.npy.h5"
    img = np.full((3, 8, 8), 0.5, dtype=np.float32)
    _write_h5(victim, image=img, label=np.zeros((3, 8, 9), dtype=np.uint8))
    with pytest.raises(DatasetError, match=_err(victim) + ".*image's shape"):
        make_dm(data_copy, val_volumes=1).setup("fit")  # keys/shapes are read to count the slices
    lab = np.zeros((3, 8, 8), dtype=np.float32)
    lab[2, 4, 4] = -3
    _write_h5(victim, image=img, label=lab)
    dm = make_dm(data_copy, val_volumes=1, img_size=8)
    dm.setup("fit")
    assert dm.val_dataset[1]["label"].shape == (8, 8)  # float labels with integer values are accepted
    with pytest.raises(DatasetError, match=_err(victim) + r".*label \(slice 2\).*found values \[-3\]"):
        dm.val_dataset[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="img_size"):
        SynapseDataModule(img_size=0)
    with pytest.raises(ValueError, match="resize_backend"):
        SynapseDataModule(resize_backend="pil")
