"""The attention-collapse measure: hand-worked maps, the brute-force definition, and the recording contract."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lightning_modules.attention_collapse import (
    as_metrics,
    attention_layers,
    collapse_score,
    measure_attention_collapse,
    plot_table_collapse,
    table_collapse_series,
)


def test_identical_rows_score_one_and_one_hot_rows_score_zero():
    same = torch.tensor([0.2, 0.3, 0.5]).expand(1, 1, 4, 3)
    assert float(collapse_score(same)) == pytest.approx(1.0)
    assert float(collapse_score(torch.eye(3).reshape(1, 1, 3, 3))) == pytest.approx(0.0)
    # two rows at 60 degrees, one orthogonal to both: pairs (1/2, 0, 0) → mean 1/6
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.5, 3 ** 0.5 / 2, 0.0], [0.0, 0.0, 2.0]]).reshape(1, 1, 3, 3)
    assert float(collapse_score(rows)) == pytest.approx(1 / 6)


def test_score_equals_the_brute_force_mean_over_row_pairs_and_heads():
    torch.manual_seed(0)
    attention = torch.randn(2, 3, 7, 5)
    unit = nn.functional.normalize(attention.double(), dim=-1)
    brute = []
    for b in range(2):
        for h in range(3):
            cos = unit[b, h] @ unit[b, h].T
            brute.append((cos.sum() - cos.diagonal().sum()) / (7 * 6))
    assert float(collapse_score(attention)) == pytest.approx(float(torch.stack(brute).mean()), abs=1e-12)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="B, heads"):
        collapse_score(torch.ones(3, 3))
    with pytest.raises(ValueError, match="two query rows"):
        collapse_score(torch.ones(1, 1, 1, 4))


class _Recorder(nn.Module):
    """Attention whose rows are softmax(x·w): follows the recording contract."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.record_attention = False
        self.last_attention = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attn = (self.proj(tokens) @ tokens.transpose(1, 2)).softmax(-1)[:, None]  # (B, 1, N, N)
        if self.record_attention:
            self.last_attention = attn.detach()
        return attn[:, 0] @ tokens


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Recorder(4), _Recorder(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 4, H, W)
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens


def test_measure_finds_the_layers_in_order_and_restores_the_net():
    net = _Net().train()
    images = torch.randn(5, 4, 3, 3)
    assert [name for name, _ in attention_layers(net)] == ["layers.0", "layers.1"]
    scores = measure_attention_collapse(net, images, batch_size=2)
    assert list(scores) == ["layers.0", "layers.1"]
    # batch-size weighting: the same as one batch of all five images
    assert scores == pytest.approx(measure_attention_collapse(net, images, batch_size=5))
    assert net.training and not any(m.record_attention for _, m in attention_layers(net))
    assert all(m.last_attention is None for _, m in attention_layers(net))
    assert list(as_metrics(scores)) == ["collapse/layer_00", "collapse/layer_01"]
    with pytest.raises(ValueError, match="record_attention"):
        measure_attention_collapse(nn.Conv2d(4, 4, 1), images)


def test_the_table_figure_averages_the_seeds_per_layer(tmp_path):
    results = {"paper": "convformer", "table": 2, "data_kind": "synthetic", "seeds": [1, 2], "variants": [
        {"name": "a", "runs": [{"metrics": {"collapse/layer_00": 0.2, "collapse/layer_01": 0.4}},
                               {"metrics": {"collapse/layer_00": 0.4, "collapse/layer_01": 0.6}}]},
        {"name": "no_attention", "runs": [{"metrics": {"test/dice": 1.0}}]},
    ]}
    assert table_collapse_series(results) == {"a": pytest.approx([0.3, 0.5])}
    png = tmp_path / "t.collapse.png"
    plot_table_collapse(json.loads(json.dumps(results)), png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_script_measures_each_attention_type_of_a_recipe(tmp_path, monkeypatch):
    import subprocess
    import sys

    from tests.training.helpers import CONFIGS

    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [sys.executable, "reproduce/attention_collapse.py", "--attention", "vanilla", "convformer",
            "--images", "2", "--out", str(tmp_path / "out")]
    for layer in ("convformer/acdc.yaml", "_base_/synthetic_acdc.yaml", "convformer/smoke.yaml"):
        args += ["--config", str(CONFIGS / layer)]
    result = subprocess.run(args, cwd=CONFIGS.parent.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "out" / "attention_collapse.json").read_text())
    assert set(written["scores"]) == {"vanilla", "convformer"}
    assert all(len(layers) == 2 and all(-1.0 <= v <= 1.0 for v in layers.values())
               for layers in written["scores"].values())
    assert (tmp_path / "out" / "attention_collapse.png").read_bytes()[:4] == b"\x89PNG"
