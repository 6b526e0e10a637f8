"""ImageNetDataModule on synthetic class folders: layout, class index, transforms, determinism, broken files."""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import checks
from datamodules.checks import DataCheckError, DataFile, check_files
from datamodules.errors import DatasetError
from datamodules.image_headers import read_image_header
from datamodules.imagenet import ImageNetDataModule, imagenet_eval_transform
from datamodules.synthetic_folders import SyntheticFolders, synthetic_wnids, write_synthetic_folders
from reproduce import check_data

CONFIGS = Path(__file__).resolve().parents[2] / "reproduce" / "configs"
RECIPE = [CONFIGS / "slab" / "deit_t.yaml", CONFIGS / "slab" / "smoke.yaml"]
SMALL = {"num_classes": 3, "train_per_class": 4, "val_per_class": 3, "size": 36, "seed": 0}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """3 classes × (4 train, 3 val) JPEGs of 36²; read-only (copy with ``data_copy``)."""
    return write_synthetic_folders(tmp_path_factory.mktemp("folders") / "imagenet", **SMALL)


@pytest.fixture()
def data_copy(folders, tmp_path) -> Path:
    return Path(shutil.copytree(folders, tmp_path / "imagenet"))


def _dm(root: Path, **kwargs) -> ImageNetDataModule:
    kwargs = {"img_size": 32, "batch_size": 4, "num_workers": 0, "data_check": "off", **kwargs}
    return ImageNetDataModule(data_dir=str(root), **kwargs)


def _age(root: Path) -> None:
    then = time.time_ns() - 60 * 10**9
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(then, then))


def test_layout_and_class_index(data_copy):
    shutil.rmtree(data_copy / "val" / "n90000000")  # val lacking a class keeps train's index
    dm = _dm(data_copy, num_classes=3)
    dm.setup("fit")
    assert dm.class_names == tuple(synthetic_wnids(3)) and dm.num_classes == 3 and not dm.is_synthetic
    assert len(dm.train_dataset) == 12 and len(dm.val_dataset) == 6
    assert [label for _, label in dm.samples("val")] == [1, 1, 1, 2, 2, 2]
    assert dm.samples("train")[0][0].name == "n90000000_0.JPEG"
    item = dm.val_dataset[0]
    assert item["case"] == "val/n90000001/ILSVRC2012_val_00000004.JPEG" and item["label"].item() == 1


def test_val_class_unknown_to_train_and_class_count_are_errors(data_copy):
    (data_copy / "val" / "n99999999").mkdir()
    shutil.copy(next((data_copy / "val" / "n90000000").iterdir()), data_copy / "val" / "n99999999" / "x.JPEG")
    with pytest.raises(DatasetError, match=r"val/n99999999: class folder not in the training split's 3 classes"):
        _dm(data_copy).setup("fit")
    with pytest.raises(DatasetError, match="3 class folders; expected num_classes=1000"):
        _ = _dm(data_copy, num_classes=1000).num_classes
    (data_copy / "train" / "n90000003").mkdir()
    with pytest.raises(DatasetError, match="n90000003: class folder without images"):
        _dm(data_copy).setup("fit")
    with pytest.raises(DatasetError, match="IMAGENET_DATA_DIR"):
        ImageNetDataModule().resolve_root()
    with pytest.raises(ValueError, match="not both"):
        ImageNetDataModule(data_dir="/x", synthetic=SyntheticFolders())


def test_batches_shapes_and_normalisation(data_copy):
    dm = _dm(data_copy)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (4, 3, 32, 32) and train["image"].dtype == torch.float32
    assert train["label"].shape == (4,) and train["label"].dtype == torch.int64
    assert len(dm.train_dataloader()) == 3  # 12 images, batch 4, last incomplete batch dropped
    val = next(iter(dm.val_dataloader()))
    assert set(val) == {"image", "label", "case"} and val["image"].shape == (4, 3, 32, 32)
    assert val["image"].min() < -1.0 and val["image"].max() > 1.0  # normalised with ImageNet mean / std
    rect = imagenet_eval_transform(32)(Image.new("RGB", (80, 50), (124, 116, 104)))
    assert rect.shape == (3, 32, 32) and rect.abs().max() < 0.02  # the mean colour → ~0
    assert imagenet_eval_transform(224).transforms[0].size == 256


def test_training_items_depend_on_seed_epoch_index_only(data_copy):
    dm = _dm(data_copy, seed=5)
    dm.setup("fit")
    ds = dm.train_dataset
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    a = ds[(0, 3)]["image"]
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])  # the global RNGs are left as they were
    torch.rand(10), np.random.rand(3), random.random()
    assert torch.equal(ds[(0, 3)]["image"], a) and not torch.equal(ds[(1, 3)]["image"], a)
    workers = _dm(data_copy, seed=5, num_workers=1)
    workers.setup("fit")
    for x, y in zip(dm.train_dataloader(), workers.train_dataloader(), strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


def test_synthetic_option_writes_the_layout_once(tmp_path):
    options = SyntheticFolders(num_classes=2, train_per_class=2, val_per_class=1, cache_dir=str(tmp_path))
    dm = ImageNetDataModule(img_size=32, batch_size=2, num_workers=0, synthetic=options)
    root = dm.resolve_root()
    assert dm.is_synthetic and dm.num_classes == 2 and (root / "synthetic.json").is_file()
    assert Image.open(root / "train" / "n90000001" / "n90000001_1.JPEG").size == (37, 37)  # 32 · 256/224
    assert options.ensure(32) == root


# ------------------------------------------------------------------ the whole-set check
def _break(root: Path) -> list[Path]:
    """A truncated JPEG, a zero-byte file, a text file named .JPEG; returns them sorted."""
    train = sorted((root / "train" / "n90000001").iterdir())
    truncated, empty, text = train[0], train[1], root / "val" / "n90000002" / "notes.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty.write_bytes(b"")
    text.write_text("not an image\n")
    return [truncated, empty, text]


def test_every_broken_file_in_one_error_from_setup(data_copy):
    broken = _break(data_copy)
    dm = _dm(data_copy, data_check="fast")
    with pytest.raises(DataCheckError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert message.startswith(f"3 broken files in {data_copy} (fast check of 22 files):")
    assert sorted(info.value.broken_files) == sorted(broken)
    assert "EOI marker" in message and "empty file (0 bytes)" in message and "neither a JPEG nor a PNG" in message
    assert dm.train_dataset is None  # stopped before any dataset was built
    with pytest.raises(DataCheckError, match="1 broken file in"):
        dm.setup("test")  # the test stage reads val/ only


def test_check_data_script_lists_every_broken_file(data_copy, capsys):
    args = [a for f in RECIPE for a in ("--config", str(f))] + [
        "--data.init_args.data_dir", str(data_copy), "--no-progress"]
    assert check_data.main(args) == 0
    assert capsys.readouterr().out.startswith("data check (full): 21 files")
    broken = _break(data_copy)
    with pytest.raises(SystemExit) as info:
        check_data.main([*args, "--level", "fast"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 broken files in") and all(str(p) in err for p in broken)


def test_fast_reads_headers_full_decodes(data_copy, monkeypatch):
    victim = sorted((data_copy / "train" / "n90000000").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[data.index(b"\xff\xc4") + 4] = 0x5F  # a bogus Huffman table index: frame header and EOI intact
    victim.write_bytes(bytes(data))
    files = [DataFile(victim, 3, content="class_image")]
    assert check_files(files, level="fast", use_cache=False).ok
    with pytest.raises(DataCheckError, match="JPEG data that PIL decodes"):
        check_files(files, level="full", use_cache=False)
    header = read_image_header(data_copy / "val" / "n90000001" / "ILSVRC2012_val_00000004.JPEG")
    assert (header.format, header.width, header.height, header.channels, header.complete) == ("jpeg", 36, 36, 3, True)


def test_png_named_jpeg_and_cmyk_jpeg_are_fine_and_results_are_cached(data_copy, monkeypatch):
    folder = data_copy / "train" / "n90000002"
    Image.new("RGB", (20, 30), (10, 200, 30)).save(folder / "png_inside.JPEG", format="PNG")  # as in ImageNet
    Image.new("CMYK", (24, 24), (0, 50, 100, 0)).save(folder / "cmyk.JPEG", format="JPEG")
    _age(data_copy)
    dm = _dm(data_copy, data_check="full")
    first = dm.check_data(progress=False)
    assert first.ok and first.num_files == 23 and first.num_read == 23
    calls = []
    monkeypatch.setattr(checks, "check_file", lambda *a, **k: calls.append(a) or [])
    assert dm.check_data(progress=False).num_read == 0 and dm.check_data("fit", "fast", progress=False).ok
    assert calls == []
    dm.setup("fit")
    assert dm.train_dataset[(0, 13)]["image"].shape == (3, 32, 32)  # the PNG and the CMYK JPEG load
