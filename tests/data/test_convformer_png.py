"""ACDC / ISIC 2018 in the ConvFormer PNG layout: layout, batches, augmentation, data checks, synthetic writer."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from datamodules.checks import DataCheckError, DataFile, check_files
from datamodules.convformer_png import ConvFormerPNGDataModule
from datamodules.errors import DatasetError
from datamodules.png_layout import load_png_pair
from datamodules.synthetic_png import SyntheticPNG, ensure_synthetic_png, write_synthetic_png
from datamodules.transforms import CONVFORMER_GAMMAS, DiscreteGamma, convformer_train_transform, reseed
from reproduce import check_data

SIZE = 32
ACDC = {"num_train": 3, "num_val": 1, "num_test": 2, "slices_per_patient": 3, "size": SIZE, "seed": 0}
ISIC = {"num_train": 6, "num_test": 3, "size": SIZE, "seed": 0}
RECIPE = Path(__file__).resolve().parents[2] / "reproduce" / "configs"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def acdc_root(tmp_path_factory) -> Path:
    return write_synthetic_png(tmp_path_factory.mktemp("png") / "acdc", "acdc", **ACDC)


@pytest.fixture(scope="session")
def isic_root(tmp_path_factory) -> Path:
    return write_synthetic_png(tmp_path_factory.mktemp("png") / "isic", "isic2018", **ISIC)


@pytest.fixture()
def acdc_copy(acdc_root, tmp_path) -> Path:
    return Path(shutil.copytree(acdc_root, tmp_path / "acdc"))


def _dm(root: Path, dataset: str = "acdc", **kwargs) -> ConvFormerPNGDataModule:
    kwargs.setdefault("img_size", SIZE)
    return ConvFormerPNGDataModule(dataset, data_dir=str(root), **kwargs)


def _ids(root: Path, split: str) -> list[str]:
    return (root / "MainPatient" / f"{split}.txt").read_text().split()


# ----------------------------------------------------------------------------- layout and batches


def test_acdc_layout_splits_and_metadata(acdc_root):
    dm = _dm(acdc_root)
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.eval_mode) == (
        4, ("background", "RV", "Myo", "LV"), 1, "patient")
    assert not dm.is_synthetic and dm.img_size == SIZE and "valofficial" in dm.selection_note
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_dataset.ids == _ids(acdc_root, "trainofficial") and len(dm.train_dataset) == 9
    assert dm.val_dataset.ids == _ids(acdc_root, "valofficial") and dm.test_dataset.ids == _ids(acdc_root,
                                                                                                 "testofficial")
    batch = next(iter(dm.test_dataloader()))
    assert batch["case"] == ["0005_01"] and batch["patient"] == ["0005"]
    patients = [item["patient"] for item in dm.test_dataset]
    assert patients == ["0005"] * 3 + ["0006"] * 3  # several slices per patient: patient-level grouping


def test_batches_shapes_dtypes_and_tensor_scaling(acdc_root, isic_root):
    for root, dataset, channels in ((acdc_root, "acdc", 1), (isic_root, "isic2018", 3)):
        dm = _dm(root, dataset, batch_size=4)
        dm.setup("fit")
        train = next(iter(dm.train_dataloader()))
        assert set(train) == {"image", "label"}
        assert train["image"].shape == (4, channels, SIZE, SIZE) and train["image"].dtype == torch.float32
        assert train["label"].shape == (4, SIZE, SIZE) and train["label"].dtype == torch.int64
        assert 0.0 <= train["image"].min() and train["image"].max() <= 1.0
        val = next(iter(dm.val_dataloader()))
        assert set(val) == {"image", "label", "case", "patient"} and val["image"].shape == (1, channels, SIZE, SIZE)
        raw = cv2.imread(str(root / "img" / f"{val['case'][0]}.png"), cv2.IMREAD_UNCHANGED)
        raw = raw[None] if raw.ndim == 2 else cv2.cvtColor(raw, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        torch.testing.assert_close(val["image"][0], torch.from_numpy(raw).float() / 255.0)  # ToTensor, no norm


def test_isic_is_rgb_labels_above_one_become_one_and_selection_is_on_test(isic_root, tmp_path):
    dm = _dm(isic_root, "isic2018")
    assert (dm.num_classes, dm.in_channels, dm.eval_mode) == (2, 3, "image")
    assert "test split 'test' (the release's choice)" in dm.selection_note
    dm.setup("fit")
    assert dm.val_dataset.ids == _ids(isic_root, "test")
    raw = cv2.imread(str(isic_root / "label" / f"{dm.val_dataset.ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(raw)) == {0, 255}  # as the challenge masks
    item = dm.val_dataset[0]
    assert item["patient"] == item["case"] and set(item["label"].unique().tolist()) == {0, 1}
    # channel order: a pure red RGB image reads as (1, 0, 0)
    red = np.zeros((SIZE, SIZE, 3), np.uint8)
    red[..., 2] = 255  # BGR on disk
    cv2.imwrite(str(tmp_path / "red.png"), red)
    cv2.imwrite(str(tmp_path / "lab.png"), np.full((SIZE, SIZE), 7, np.uint8))
    image, label = load_png_pair(tmp_path / "red.png", tmp_path / "lab.png", channels=3, num_classes=2)
    assert image[0, 0].tolist() == [255, 0, 0] and label.max() == 1
    with pytest.raises(DatasetError, match=r"lab\.png: expected label values in 0\.\.3 \(4 classes\); found .*\[7\]"):
        load_png_pair(tmp_path / "red.png", tmp_path / "lab.png", channels=3, num_classes=4)
    with pytest.raises(DatasetError, match=r"red\.png: expected a grayscale \(1 channel\) image; found 3 channels"):
        load_png_pair(tmp_path / "red.png", tmp_path / "lab.png", channels=1, num_classes=2)


def test_select_on_val_holds_out_part_of_the_training_list(isic_root):
    dm = _dm(isic_root, "isic2018", select_on="val", val_fraction=0.34)
    dm.setup("fit")
    train, val = dm.train_dataset.ids, dm.val_dataset.ids
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == sorted(_ids(isic_root, "train"))
    assert "not the release's choice" in dm.selection_note
    again = _dm(isic_root, "isic2018", select_on="val", val_fraction=0.34)
    again.setup("fit")
    assert again.val_dataset.ids == val
    acdc = _dm(isic_root, "acdc")  # patient-level data: whole patients are held out
    ids = ["0001_01", "0001_02", "0002_01", "0002_02", "0003_01"]
    kept, held = acdc._hold_out(ids)
    assert {i[:4] for i in kept}.isdisjoint({i[:4] for i in held}) and len(held) in (1, 2)


def test_augmentation_is_deterministic_and_independent_of_num_workers(acdc_root):
    def batches(num_workers: int, epoch: int) -> list[dict]:
        dm = _dm(acdc_root, batch_size=4, num_workers=num_workers, seed=7)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader)

    for epoch in (0, 1):
        ref, other = batches(0, epoch), batches(2, epoch)
        assert len(ref) == 3
        for a, b in zip(ref, other, strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    plain = _dm(acdc_root, augment=False)
    plain.setup("fit")
    first = torch.cat([b["image"] for b in batches(0, 0)])
    assert not torch.equal(first, torch.cat([b["image"] for b in batches(0, 1)]))  # epochs differ
    raw = torch.stack([plain.train_dataset[i]["image"] for i in range(9)])
    assert not torch.equal(torch.sort(first.flatten())[0], torch.sort(raw.flatten())[0])  # augmented


def test_release_augmentation_steps():
    t = convformer_train_transform(SIZE, random_crop=True)
    assert [type(s).__name__ for s in t.transforms] == ["DiscreteGamma", "RandomCrop", "Rotate", "Sequential",
                                                         "ColorJitter"]
    assert [s.p for s in t.transforms] == [0.5, 1.0, 0.5, 0.5, 0.5]
    assert "RandomCrop" not in [type(s).__name__ for s in convformer_train_transform(SIZE).transforms]  # ISIC
    assert CONVFORMER_GAMMAS == (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4)
    gamma = A.Compose([DiscreteGamma(p=1.0)])
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    table = {g: np.floor(255 * (x / 255.0) ** (1 / g)).astype(np.uint8) for g in CONVFORMER_GAMMAS}
    seen = set()
    for seed in range(60):
        reseed(gamma, seed)
        out = gamma(image=x)["image"]
        seen |= {g for g, expected in table.items() if np.array_equal(out, expected)}
    assert len(seen) >= 10 and seen <= set(CONVFORMER_GAMMAS)


# ----------------------------------------------------------------------------- errors and data checks


def _break(root: Path) -> dict[Path, str]:
    """Damage seven files of the ACDC copy in seven ways; ``{file: pattern of its line}``."""
    train = _ids(root, "trainofficial")
    img, lab = root / "img", root / "label"
    data = (img / f"{train[0]}.png").read_bytes()
    (img / f"{train[0]}.png").write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(img / f"{train[1]}.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
    cv2.imwrite(str(img / f"{train[2]}.png"), np.zeros((SIZE + 8, SIZE), np.uint8))
    bad = np.zeros((SIZE, SIZE), np.uint8)
    bad[0, :3] = (4, 7, 255)
    cv2.imwrite(str(lab / f"{train[3]}.png"), bad)
    (lab / f"{train[4]}.png").unlink()
    cv2.imwrite(str(img / "tmp.jpg"), np.zeros((SIZE, SIZE), np.uint8))
    (img / "tmp.jpg").rename(img / f"{train[5]}.png")
    val = _ids(root, "valofficial")[0]
    data = bytearray((lab / f"{val}.png").read_bytes())
    data[60:70] = b"\x00" * 10  # corrupt compressed data (CRC mismatch), header and IEND intact
    (lab / f"{val}.png").write_bytes(bytes(data))
    return {
        img / f"{train[0]}.png": r"expected a complete PNG ending with its IEND chunk; found a file of \d+ bytes",
        img / f"{train[1]}.png": r"expected a grayscale \(1-channel\) PNG image \(intensities\); found an RGB "
                                 r"\(3-channel\) PNG",
        img / f"{train[2]}.png": rf"expected {SIZE}x{SIZE} pixels \(H x W; the release never resizes\); "
                                 rf"found {SIZE + 8}x{SIZE}",
        lab / f"{train[3]}.png": r"expected label values in 0\.\.3 \(4 classes\); found values \[4, 7, 255\] in 3 "
                                 r"pixels",
        lab / f"{train[4]}.png": r"expected the file listed in .*trainofficial\.txt; found no such file",
        img / f"{train[5]}.png": r"expected a PNG image; found a JPEG file",
        lab / f"{val}.png": r"expected PNG data that decodes; found data OpenCV cannot decode",
    }


def _assert_lists_every_file(message: str, root: Path, broken: dict[Path, str], total: int) -> None:
    lines = message.splitlines()
    assert lines[0] == f"{len(broken)} broken files in {root} (full check of {total} files):", message
    for path, pattern in broken.items():
        assert any(re.fullmatch(rf"  {re.escape(str(path))}: {pattern}.*", line) for line in lines[1:]), (
            path, message)
    assert len(lines) == 1 + len(broken)


def test_setup_reports_every_broken_file_in_one_error(acdc_copy):
    broken = _break(acdc_copy)
    dm = _dm(acdc_copy)
    with pytest.raises(DataCheckError) as info:
        dm.setup("fit")  # train (9 pairs) + valofficial (3 pairs)
    _assert_lists_every_file(str(info.value), acdc_copy, broken, total=24)
    assert dm.train_dataset is None and set(info.value.broken_files) == set(broken)
    dm.setup("test")  # the test split is intact

    fast = _dm(acdc_copy, data_check="fast")
    with pytest.raises(DataCheckError) as info:
        fast.setup("fit")  # headers only: label values and corrupt image data need "full"
    assert set(info.value.broken_files) == set(broken) - {p for p in broken if p.parent.name == "label"} | {
        acdc_copy / "label" / f"{_ids(acdc_copy, 'trainofficial')[4]}.png"}


def test_check_data_script_lists_every_broken_file(acdc_copy, capsys):
    args = ["--config", str(RECIPE / "cswin_unet" / "synapse.yaml"), "--config",
            str(RECIPE / "_base_" / "synthetic_acdc.yaml"), "--data.init_args.synthetic", "null",
            "--data.init_args.data_dir", str(acdc_copy), "--data.init_args.img_size", str(SIZE), "--no-progress"]
    assert check_data.main(args) == 0
    assert "data check (full): 36 files" in capsys.readouterr().out
    broken = _break(acdc_copy)
    with pytest.raises(SystemExit) as info:
        check_data.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 7 broken files in") and "Traceback" not in err
    _assert_lists_every_file(err.removeprefix("error: ").split("\n(set REPRO_TRACEBACK")[0], acdc_copy, broken, 36)


def test_missing_root_folders_lists_and_patient_ids(acdc_copy, monkeypatch):
    monkeypatch.delenv("ACDC_DATA_DIR", raising=False)
    with pytest.raises(DatasetError, match="ACDC_DATA_DIR is not set; expected a folder containing img/, label/"):
        ConvFormerPNGDataModule("acdc").setup("fit")
    monkeypatch.setenv("ACDC_DATA_DIR", str(acdc_copy / "nowhere"))
    with pytest.raises(DatasetError, match=r"nowhere: ACDC data root \(from the environment variable ACDC_DATA_DIR\)"):
        ConvFormerPNGDataModule("acdc").setup("fit")
    monkeypatch.setenv("ACDC_DATA_DIR", str(acdc_copy))
    ConvFormerPNGDataModule("acdc", img_size=SIZE).setup("test")
    (acdc_copy / "MainPatient" / "valofficial.txt").write_text("patient1_01\n0004_02\n")
    with pytest.raises(DatasetError, match=r"valofficial\.txt: expected ids that start with a 4-digit patient number"):
        _dm(acdc_copy).setup("fit")
    (acdc_copy / "MainPatient" / "testofficial.txt").unlink()
    with pytest.raises(DatasetError, match=r"testofficial\.txt: list file not found"):
        _dm(acdc_copy).setup("test")
    (acdc_copy / "MainPatient" / "valofficial.txt").write_text("0004_01\n")
    shutil.rmtree(acdc_copy / "label")
    with pytest.raises(DatasetError, match=r"label: folder not found"):
        _dm(acdc_copy, data_check="off").setup("fit")


def test_expected_size_follows_img_size_and_is_part_of_the_cache_key(acdc_root):
    assert _dm(acdc_root).check_data("test").ok
    with pytest.raises(DataCheckError) as info:
        _dm(acdc_root, img_size=64).check_data("test")  # cached as fine at 32 x 32, not at 64 x 64
    assert len(info.value.broken_files) == 12
    assert all(p.expected.startswith("64x64 pixels") for p in info.value.problems)
    label = DataFile(acdc_root / "label" / "0001_01.png", 2, content="label", size=(SIZE, SIZE))
    assert check_files([label], num_classes=4).ok
    assert not check_files([label], num_classes=3, raise_on_error=False).ok  # LV (3) is out of range for 3
    folded = DataFile(label.path, 2, content="label", size=(SIZE, SIZE), fold_labels=True)
    assert check_files([folded], num_classes=2).ok


# ----------------------------------------------------------------------------- synthetic writer


def test_synthetic_writer_round_trips_and_is_deterministic(acdc_root, isic_root, tmp_path):
    again = write_synthetic_png(tmp_path / "again", "acdc", **ACDC)
    files = sorted(p.relative_to(acdc_root) for p in acdc_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((acdc_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = write_synthetic_png(tmp_path / "other", "acdc", **{**ACDC, "seed": 1})
    assert (other / "img" / "0001_01.png").read_bytes() != (acdc_root / "img" / "0001_01.png").read_bytes()
    assert write_synthetic_png(acdc_root, "acdc", **ACDC) == acdc_root  # idempotent
    with pytest.raises(FileExistsError):
        write_synthetic_png(acdc_root, "acdc", **{**ACDC, "seed": 5})

    ids = {s: _ids(acdc_root, s) for s in ("trainofficial", "valofficial", "testofficial")}
    assert ids["trainofficial"][:4] == ["0001_01", "0001_02", "0001_03", "0002_01"]
    assert ids["valofficial"] == ["0004_01", "0004_02", "0004_03"]
    for image_id in sum(ids.values(), []):
        image = cv2.imread(str(acdc_root / "img" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(acdc_root / "label" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == label.shape == (SIZE, SIZE) and image.dtype == np.uint8
        present = set(np.unique(label).tolist())
        assert present == ({0, 2, 3} if image_id.endswith("_03") else {0, 1, 2, 3}), image_id  # no RV at the apex
    isic_ids = _ids(isic_root, "train") + _ids(isic_root, "test")
    assert len(isic_ids) == 9 and isic_ids[0] == "ISIC_0000001"
    assert sorted(p.name for p in (isic_root / "MainPatient").iterdir()) == ["test.txt", "train.txt"]
    rgb = cv2.imread(str(isic_root / "img" / f"{isic_ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (SIZE, SIZE, 3)


def test_synthetic_option_is_cached_and_follows_img_size(tmp_path, capsys):
    dm = ConvFormerPNGDataModule("isic2018", img_size=SIZE, synthetic=SyntheticPNG(num_train=4, num_test=2))
    assert dm.is_synthetic
    dm.prepare_data()
    root = dm.resolve_root()
    assert root.parent == tmp_path / "cache" and f"size{SIZE}" in root.name
    assert "written to" in capsys.readouterr().out
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and next(iter(dm.train_dataloader()))["image"].shape == (4, 3, SIZE, SIZE)
    assert ensure_synthetic_png(None, "isic2018", num_train=4, num_val=2, num_test=2, slices_per_patient=4,
                                size=SIZE, seed=0) == root
    assert capsys.readouterr().out == ""  # reused, not written again
    with pytest.raises(ValueError, match="data_dir.*synthetic"):
        ConvFormerPNGDataModule("acdc", data_dir=str(tmp_path), synthetic=SyntheticPNG())
    with pytest.raises(ValueError, match="dataset must be one of"):
        ConvFormerPNGDataModule("ich")
