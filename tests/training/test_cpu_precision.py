"""bf16 on a CPU without bf16 instructions is warned about when the trainer is built."""
import warnings

import lightning as L
import pytest

from lightning_modules import cpu_precision
from lightning_modules.cpu_precision import warn_if_cpu_lacks_bf16


def trainer(precision: str) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_warns_for_bf16_without_native_support(monkeypatch, precision):
    monkeypatch.setattr(cpu_precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"without AVX-512 BF16 or AMX.*--trainer\.precision 32-true"):
        assert warn_if_cpu_lacks_bf16(trainer(precision))


@pytest.mark.parametrize("native, precision", [(True, "bf16-mixed"), (False, "32-true")])
def test_silent_with_native_bf16_or_fp32(monkeypatch, native, precision):
    monkeypatch.setattr(cpu_precision, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_cpu_lacks_bf16(trainer(precision))


def test_cli_warns_when_it_builds_the_trainer(monkeypatch, tmp_path):
    from lightning_modules.cli import ReproCLI

    monkeypatch.setattr(cpu_precision, "cpu_has_native_bf16", lambda: False)
    args = ["--config", "tests/toy_task/configs/recipe.yaml", "--trainer.precision", "bf16-mixed",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    with pytest.warns(UserWarning, match="without AVX-512 BF16"):
        ReproCLI(args=args, run=False)
