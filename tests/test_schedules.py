"""The LR each optimizer step actually runs at, against the release's closed form."""
from __future__ import annotations

import typing

import pytest
import torch

from lightning_modules.schedules import ScheduleName, build_schedule, poly_factor

BASE = 0.05


def release_lr(step: int, total: int, power: float = 0.9) -> float:
    """TransUNet-lineage trainer: steps 0 and 1 at the base LR, step k >= 1 at base·(1 − (k−1)/T)^p."""
    return BASE if step == 0 else BASE * (1 - (step - 1) / total) ** power


def lrs_used(name: ScheduleName, total: int, power: float = 0.9, steps: int | None = None) -> list[float]:
    """Read the LR before every optimizer.step(); step the scheduler after it, as Lightning does."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE, momentum=0.9)
    scheduler = build_schedule(optimizer, name, total, power)
    used = []
    for _ in range(total if steps is None else steps):
        used.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("total", [1, 2, 10, 1000])
def test_poly_default_is_the_release_sequence(total):
    used = lrs_used("poly", total)
    assert used == pytest.approx([release_lr(k, total) for k in range(total)], rel=1e-12, abs=0.0)
    assert used[0] == BASE
    if total >= 2:
        assert used[1] == BASE  # the release's update after step 0 still uses iter_num = 0
    if total >= 3:
        assert used[2] == pytest.approx(BASE * (1 - 1 / total) ** 0.9, rel=1e-12)
    # the last step runs at base·(2/T)^0.9 (T ≥ 2), never at 0
    assert used[-1] == pytest.approx(BASE * min(1.0, 2 / total) ** 0.9, rel=1e-12)


@pytest.mark.parametrize("total", [1, 2, 10, 1000])
def test_poly_shifted_runs_one_step_ahead(total):
    used = lrs_used("poly_shifted", total)
    assert used == pytest.approx([BASE * (1 - k / total) ** 0.9 for k in range(total)], rel=1e-12, abs=0.0)
    assert used == pytest.approx([release_lr(k + 1, total) for k in range(total)], rel=1e-12, abs=0.0)
    assert used[-1] == pytest.approx(BASE * (1 / total) ** 0.9, rel=1e-12)


def test_poly_power_is_applied():
    assert lrs_used("poly", 10, power=2.0)[5] == pytest.approx(BASE * (1 - 4 / 10) ** 2.0, rel=1e-12)


def test_poly_is_clamped_at_zero_past_the_end():
    used = lrs_used("poly", 4, steps=8)  # step 5 = T + 1 is the first at 0
    assert used[:6] == pytest.approx([release_lr(k, 4) for k in range(6)], rel=1e-12, abs=1e-15)
    assert used[5:] == [0.0, 0.0, 0.0]


def test_poly_factor_closed_forms():
    assert poly_factor(0, 10) == poly_factor(1, 10) == 1.0
    assert poly_factor(3, 10) == pytest.approx(0.8**0.9)
    assert poly_factor(3, 10, official_lag=False) == pytest.approx(0.7**0.9)


def test_constant_schedule_and_errors():
    assert lrs_used("constant", 5) == [BASE] * 5
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    with pytest.raises(ValueError, match="total_steps >= 1"):
        build_schedule(optimizer, "poly", 0)
    with pytest.raises(ValueError, match="unknown schedule"):
        build_schedule(optimizer, "cosine", 10)  # type: ignore[arg-type]


def test_schedule_name_is_a_literal_for_the_cli():
    assert typing.get_origin(ScheduleName) is typing.Literal
    assert set(typing.get_args(ScheduleName)) == {"poly", "poly_shifted", "constant"}


def test_lightning_steps_the_schedule_like_the_release(tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.used: list[float] = []

        def training_step(self, batch, batch_idx):
            self.used.append(self.optimizers().param_groups[0]["lr"])
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=BASE)
            total = int(self.trainer.estimated_stepping_batches)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": build_schedule(optimizer, "poly", total), "interval": "step"}}

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2)), batch_size=2)
    model = Tiny()
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu").fit(model, data)
    assert model.used == pytest.approx([release_lr(k, 6) for k in range(6)], rel=1e-12)
