"""The whole-set data check (datamodules/checks.py): every broken file in one error, levels, cache, entry points."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from datamodules import checks
from datamodules.checks import DataCheckError, DataFile, check_files
from datamodules.errors import DatasetError, exit_on_dataset_error
from reproduce import check_data
from tests.training.helpers import SMOKE, make_cli

N_FILES = 14  # 12 slices + 2 volumes (conftest.SMALL)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))


def _age(root: Path, seconds: float = 60.0) -> None:
    """Give every file an mtime in the past (a fresh file is re-checked: its mtime cannot tell a later rewrite)."""
    then = time.time_ns() - int(seconds * 1e9)
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(then, then))


def _listed(root: Path) -> list[Path]:
    names = (root / "lists_Synapse" / "train.txt").read_text().split()
    return [root / "train_npz" / f"{n}.npz" for n in names]


def _write_h5(path: Path, **arrays) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def _break(root: Path) -> dict[Path, str]:
    """Damage seven files in seven ways; ``{file: pattern of its 'expected ...; found ...' line}``."""
    train = _listed(root)
    img = np.full((48, 48), 0.5, dtype=np.float32)
    lab = np.zeros((48, 48), dtype=np.uint8)

    data = train[0].read_bytes()
    train[0].write_bytes(data[: len(data) // 2])  # truncated: the zip directory is gone
    np.savez(train[1], image=img, mask=lab)  # no 'label'
    big = lab.copy()
    big[3, 3], big[4, 4] = 9, 12
    np.savez(train[2], image=img, label=big)
    nan = img.copy()
    nan[1, 2] = np.nan
    np.savez(train[3], image=nan, label=lab)
    np.savez(train[4], image=img, label=lab[:40])
    train[5].unlink()
    vol = root / "test_vol_h5" / "case0008.npy.h5"
    _write_h5(vol, image=np.full((6, 48, 48), 0.5, dtype=np.float32))
    return {
        train[0]: r"expected a NumPy \.npz archive.*; found a file that is not a readable zip archive",
        train[1]: r"expected the keys 'image' and 'label'; found keys \['image', 'mask'\] \(missing \['label'\]\)",
        train[2]: r"expected label values in 0\.\.8 \(9 classes\); found values \[9, 12\]",
        train[3]: r"expected finite image intensities; found 1 NaN and 0 inf values",
        train[4]: r"expected the label to have the image's shape \(48, 48\); found label shape \(40, 48\)",
        train[5]: r"expected the file listed in .*train\.txt; found no such file",
        vol: r"expected the datasets 'image' and 'label'; found keys \['image'\] \(missing \['label'\]\)",
    }


def _assert_lists_every_file(message: str, root: Path, broken: dict[Path, str], total: int = N_FILES) -> None:
    lines = message.splitlines()
    assert lines[0] == f"{len(broken)} broken files in {root} (full check of {total} files):"
    for path, pattern in broken.items():
        assert any(re.fullmatch(rf"  {re.escape(str(path))}: {pattern}.*", line) for line in lines[1:]), (
            path, message)
    assert len(lines) == 1 + len(broken)


def test_every_broken_file_is_reported_in_one_error(make_dm, data_copy):
    broken = _break(data_copy)
    with pytest.raises(DataCheckError) as info:
        make_dm(data_copy, data_check="full").check_data()
    assert isinstance(info.value, DatasetError)
    _assert_lists_every_file(str(info.value), data_copy, broken)
    assert set(info.value.broken_files) == set(broken)
    for problem in info.value.problems:  # each: file + what was expected + what was found
        assert problem.path in broken and problem.expected and problem.found


def test_a_file_with_several_problems_gets_a_line_each(data_copy):
    victim = _listed(data_copy)[0]
    image = np.full((48, 48), np.inf, dtype=np.float32)
    label = np.full((48, 48), 2.5, dtype=np.float32)
    np.savez(victim, image=image, label=label)
    report = check_files([DataFile(victim, 2)], raise_on_error=False)
    assert [p.expected for p in report.problems] == ["finite image intensities", "integer label values"]
    assert report.problems[0].found == "0 NaN and 2304 inf values"
    assert report.problems[1].found == "non-integer values [2.5]"
    assert len(report.broken_files) == 1


def test_h5_values_are_read_in_slabs(data_copy, monkeypatch):
    vol = data_copy / "test_vol_h5" / "case0022.npy.h5"
    label = np.zeros((6, 48, 48), dtype=np.float32)  # float labels with integer values are fine...
    label[5, 0, 0] = -3  # ...out of range in the last slab is not
    vol.unlink()
    with h5py.File(vol, "w") as f:
        f.create_dataset("image", data=np.zeros((6, 48, 48), np.float32), chunks=(1, 48, 48), compression="gzip")
        f.create_dataset("label", data=label, chunks=(2, 48, 48))
    monkeypatch.setattr(checks, "SLAB_BYTES", 2 * 48 * 48 * 4)  # 2 slices per read
    with pytest.raises(DataCheckError, match=re.escape(str(vol)) + r".*0\.\.8.*found values \[-3\] in 1 pixels"):
        check_files([DataFile(vol, 3)], workers=1)
    with h5py.File(vol, "r+") as f:
        f["label"][5, 0, 0] = 8
    assert check_files([DataFile(vol, 3)]).ok


def test_setup_checks_the_stage_files_before_building_datasets(make_dm, data_copy):
    broken = _break(data_copy)
    dm = make_dm(data_copy, data_check="full", val_volumes=1)
    with pytest.raises(DataCheckError) as info:
        dm.setup("fit")  # training slices + the first test volume (validation)
    _assert_lists_every_file(str(info.value), data_copy, broken, total=N_FILES - 1)
    assert dm.train_dataset is None and dm.val_dataset is None

    dm = make_dm(data_copy, data_check="full")
    with pytest.raises(DataCheckError) as info:
        dm.setup("test")
    vol = data_copy / "test_vol_h5" / "case0008.npy.h5"
    assert info.value.broken_files == [vol]
    assert str(info.value).splitlines()[0] == f"1 broken file in {data_copy} (full check of 2 files):"


def test_data_check_off_leaves_content_to_the_items(make_dm, data_copy):
    np.savez(_listed(data_copy)[3], image=np.full((48, 48), np.nan, np.float32), label=np.zeros((48, 48), np.uint8))
    make_dm(data_copy, data_check="off").setup("fit")
    with pytest.raises(DataCheckError):
        make_dm(data_copy, data_check="full").setup("fit")
    with pytest.raises(ValueError, match="data_check"):
        make_dm(data_copy, data_check="everything")


def test_fast_level_reads_headers_only(make_dm, data_copy, monkeypatch):
    broken = _break(data_copy)

    def no_reading(*args, **kwargs):
        raise AssertionError("the fast check read an array")

    monkeypatch.setattr(np.lib.format, "read_array", no_reading)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_reading)
    monkeypatch.setattr(h5py.Dataset, "read_direct", no_reading)
    with pytest.raises(DataCheckError) as info:
        make_dm(data_copy).check_data(level="fast")
    train = _listed(data_copy)
    assert str(info.value).startswith(f"5 broken files in {data_copy} (fast check of {N_FILES} files):")
    # truncated zip, missing key, shape mismatch (headers), missing file, h5 without label; values need "full"
    assert info.value.broken_files == [train[0], train[1], train[4], train[5], data_copy / "test_vol_h5" /
                                       "case0008.npy.h5"]
    for path in info.value.broken_files:
        assert re.search(re.escape(str(path)) + ": " + broken[path], str(info.value))


def test_fast_level_checks_npy_sizes_against_headers(data_copy):
    victim = _listed(data_copy)[0]
    np.savez(victim, image=np.zeros((48, 48), np.float32), label=np.zeros((48, 48), np.uint8))
    data = bytearray(victim.read_bytes())
    header = data.index(b"(48, 48)")
    data[header: header + 8] = b"(49, 48)"  # a header that promises more data than stored
    victim.write_bytes(bytes(data))
    report = check_files([DataFile(victim, 2)], level="fast", raise_on_error=False)
    assert any("bytes of image data for shape (49, 48)" in p.expected for p in report.problems)


class _Counter:
    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        real = checks.check_file

        def counting(file, *args, **kwargs):
            self.paths.append(file.path)
            return real(file, *args, **kwargs)

        monkeypatch.setattr(checks, "check_file", counting)

    def take(self) -> list[Path]:
        out, self.paths = self.paths, []
        return sorted(out)


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(make_dm, data_copy, monkeypatch, tmp_path):
    _age(data_copy)
    counter = _Counter(monkeypatch)
    dm = make_dm(data_copy)
    first = dm.check_data()
    assert first.ok and first.num_read == N_FILES and len(counter.take()) == N_FILES
    cache_files = list((tmp_path / "cache" / "data_checks").iterdir())
    assert [p.suffix for p in cache_files] == [".json"]  # one file, no temporary left behind

    second = dm.check_data()
    assert second.num_read == 0 and second.num_cached == N_FILES and counter.take() == []
    assert dm.check_data(level="fast").num_read == 0  # a full result also answers a fast request

    train = _listed(data_copy)
    later = time.time_ns() - 30 * 10**9
    os.utime(train[2], ns=(later, later))  # touched: same bytes, new mtime
    label = np.zeros((48, 48), np.uint8)
    label[0, 0] = 9
    np.savez(train[7], image=np.zeros((48, 48), np.float32), label=label)  # same size, new content
    os.utime(train[7], ns=(later, later))
    with pytest.raises(DataCheckError) as info:
        dm.check_data()
    assert counter.take() == sorted([train[2], train[7]])
    assert info.value.broken_files == [train[7]]

    with pytest.raises(DataCheckError):  # a broken file is checked again every time
        dm.check_data()
    assert counter.take() == [train[7]]

    assert dm.check_data(stage="test", use_cache=False).num_read == 2
    assert len(counter.take()) == 2


def test_a_file_modified_just_before_its_check_is_checked_again(make_dm, data_copy, monkeypatch):
    _age(data_copy)
    victim = _listed(data_copy)[0]
    victim.touch()  # mtime ~ now: a same-size rewrite within the mtime granularity would go unnoticed
    counter = _Counter(monkeypatch)
    make_dm(data_copy).check_data(stage="fit")
    counter.take()
    make_dm(data_copy).check_data(stage="fit")
    assert counter.take() == [victim]


def test_progress_bar_on_rank_zero_only(data_copy, capsys, monkeypatch):
    files = [DataFile(p, 2) for p in _listed(data_copy)]
    check_files(files, progress=True, use_cache=False)
    assert "Checking data (full)" in capsys.readouterr().err
    check_files(files, progress=False, use_cache=False)
    assert capsys.readouterr().err == ""
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert not checks.is_rank_zero()
    check_files(files, use_cache=False)  # progress=None: rank 0 only
    assert capsys.readouterr().err == ""


def test_entry_points_print_every_line_and_exit_2(capsys):
    message = "2 broken files in /data (full check of 3 files):\n  /data/a.npz: expected x; found y\n  /data/b.npz: e"
    with pytest.raises(SystemExit) as info, exit_on_dataset_error():
        raise DataCheckError(message)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {message}\n")
    assert DataCheckError("from a worker").problems == ()  # re-raisable from its message alone


def _script_args(root: Path) -> list[str]:
    return [a for f in SMOKE for a in ("--config", str(f))] + [
        "--data.init_args.data_dir", str(root), "--data.init_args.synthetic", "null", "--no-progress"]


def test_check_data_script(data_copy, capsys):
    assert check_data.main(_script_args(data_copy)) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("data check (full): 14 files") and "all OK" in out and len(out.splitlines()) == 1

    broken = _break(data_copy)
    with pytest.raises(SystemExit) as info:
        check_data.main(_script_args(data_copy))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 7 broken files in") and "Traceback" not in err
    _assert_lists_every_file(err.removeprefix("error: ").split("\n(set REPRO_TRACEBACK")[0], data_copy, broken)

    with pytest.raises(SystemExit) as info:
        check_data.main([*_script_args(data_copy), "--level", "fast", "--stage", "test"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: 1 broken file in {data_copy} (fast check of 2 files):")


def test_fit_stops_before_the_first_training_step(data_copy, tmp_path):
    broken = _break(data_copy)
    cli = make_cli(tmp_path / "run", SMOKE, **{"data.init_args.data_dir": str(data_copy),
                                               "data.init_args.synthetic": None})
    model, trainer = cli.model, cli.trainer
    steps = []
    model.training_step = lambda *args, **kwargs: steps.append(1)
    with pytest.raises(DataCheckError) as info:
        trainer.fit(model, datamodule=cli.datamodule)
    assert steps == [] and trainer.global_step == 0
    # the smoke recipe validates on the first test volume: the fit stage reads every file here
    _assert_lists_every_file(str(info.value), data_copy, broken, total=N_FILES - 1)


def test_check_loader_arguments_names_the_argument():
    from datamodules.checked import check_loader_arguments

    ok = {"positive": {"batch_size": 2, "eval_batch_size": None}, "non_negative": {"seed": 0},
          "data_dir": None, "synthetic": None, "data_check": "fast"}
    check_loader_arguments(**ok)
    for change, message in (({"positive": {"batch_size": 0}}, "batch_size must be positive, got 0"),
                            ({"non_negative": {"seed": -1}}, "seed must be >= 0, got -1"),
                            ({"data_dir": "/d", "synthetic": object()}, "not both"),
                            ({"data_check": "slow"}, "data_check must be")):
        with pytest.raises(ValueError, match=message):
            check_loader_arguments(**{**ok, **change})


def test_a_good_file_hit_by_cpythons_ast_thread_race_is_checked_again_alone(data_copy, monkeypatch):
    """NumPy's header parsing in two threads can raise CPython 3.11's spurious AST SystemError (gh-106905)."""
    real, calls = checks.check_file, []

    def racy(file, *args, **kwargs):
        calls.append(file.path)
        if calls.count(file.path) == 1 and file.path.name.endswith("slice000.npz"):
            return [checks.FileProblem(file.path, "a readable archive",
                                       f"SystemError: {checks.THREAD_RACE_ERROR} (before=39, after=33)")]
        return real(file, *args, **kwargs)

    monkeypatch.setattr(checks, "check_file", racy)
    files = [DataFile(path, 2) for path in _listed(data_copy)]
    raced = [f.path for f in files if f.path.name.endswith("slice000.npz")]
    report = check_files(files, workers=2, use_cache=False, raise_on_error=False)
    assert raced and report.ok and report.problems == []
    assert sorted(calls) == sorted([f.path for f in files] + raced)  # only the raced files twice
