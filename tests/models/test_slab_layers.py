"""SLAB layers: RepBN, progressive norm schedules and counting, SLA, re-parameterisation, callbacks."""
from __future__ import annotations

import copy
import math
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models.layers.linear_attention as sla_module
from lightning_modules.slab_callbacks import ProgressiveNormSchedule, RecalibrateBN, recalibrate_bn
from models.layers import ProgressiveNorm, RepBN, SimplifiedLinearAttention
from models.layers.reparam import (
    fold_repbn_after_linear,
    fold_repbn_into_conv,
    fold_repbn_into_linear,
    fold_repbn_into_residual_stream,
    repbn_affine,
)
from models.layers.repbn import gamma_closed_form


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and positive random BN running statistics (every parameter matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() <= 1 and p.numel() > 1 else 0.0))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


# --- RepBN / ProgressiveNorm ------------------------------------------------------------------

def test_repbn_is_batchnorm_over_batch_and_tokens_plus_alpha_x():
    norm = RepBN(6)
    assert norm.alpha.item() == 1.0 and [k for k in norm.state_dict()][:1] == ["alpha"]
    _randomise(norm).eval()
    x = torch.randn(2, 5, 6)
    bn = norm.bn
    ref = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias + norm.alpha * x
    torch.testing.assert_close(norm(x), ref)
    norm.train()
    flat = x.reshape(-1, 6)
    ref = (x - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias + norm.alpha * x
    torch.testing.assert_close(norm(x), ref)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "step"])
def test_per_forward_gamma_follows_closed_form_with_warmup(schedule):
    T, warmup = 8, 2
    norm = ProgressiveNorm(4, T, warmup=warmup, schedule=schedule).train()
    for s in range(T + warmup + 3):
        expected = gamma_closed_form(s, T, schedule, warmup=warmup)
        assert norm.gamma == pytest.approx(expected, abs=1e-7)
        norm(torch.randn(2, 3, 4))
        assert float(norm.last_gamma) == pytest.approx(expected, abs=1e-7)
    assert int(norm.steps_left) == 0 and int(norm.warmup_left) == 0


def test_schedule_closed_forms():
    T = 8
    assert [gamma_closed_form(s, T) for s in (0, 2, 8, 20)] == [1.0, 0.75, 0.0, 0.0]
    assert gamma_closed_form(4, T, "cosine") == pytest.approx(0.5)
    assert gamma_closed_form(2, T, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert [gamma_closed_form(s, T, "step") for s in range(9)] == [1, 1, .75, .75, .5, .5, .25, .25, 0]
    assert gamma_closed_form(3, T, "linear", r0=0.5) == pytest.approx(0.5 * 5 / 8)


def test_training_output_is_the_mixture_and_bn_always_updates():
    norm = _randomise(ProgressiveNorm(4, 4)).train()
    x = torch.randn(2, 3, 4)
    ln, repbn = copy.deepcopy(norm.ln), copy.deepcopy(norm.repbn).train()
    out = norm(x)  # gamma = 1: output is LN, yet the BN statistics move
    torch.testing.assert_close(out, ln(x))
    assert int(norm.repbn.bn.num_batches_tracked) == 1
    repbn(x)
    torch.testing.assert_close(norm.repbn.bn.running_mean, repbn.bn.running_mean)
    out = norm(x)  # gamma = 0.75
    torch.testing.assert_close(out, 0.75 * ln(x) + 0.25 * repbn(x))


def test_eval_uses_repbn_only_unless_eval_mixture():
    norm = _randomise(ProgressiveNorm(4, 4)).train()
    x = torch.randn(2, 3, 4)
    norm(x)
    norm.eval()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    torch.testing.assert_close(norm(x), norm.repbn(x))
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())  # eval never counts
    norm.eval_mixture = True
    torch.testing.assert_close(norm(x), 0.75 * norm.ln(x) + 0.25 * norm.repbn(x))
    assert int(norm.steps_left) == 3


def test_global_step_mode_only_moves_with_set_step_and_set_gamma_pins():
    norm = ProgressiveNorm(4, 8, warmup=1, schedule="cosine", counting="global_step").train()
    with pytest.warns(UserWarning, match="without set_step"):
        for _ in range(3):
            norm(torch.randn(2, 3, 4))
    assert norm.gamma == 1.0 and int(norm.steps_left) == 8
    norm.set_step(5)
    assert norm.gamma == pytest.approx(gamma_closed_form(5, 8, "cosine", warmup=1))
    norm.set_gamma(0.3)
    norm(torch.randn(2, 3, 4))
    assert float(norm.last_gamma) == pytest.approx(0.3)
    norm.set_gamma(None)
    assert norm.gamma == pytest.approx(gamma_closed_form(5, 8, "cosine", warmup=1))


class _TwoNorms(L.LightningModule):
    """One per-forward and one global-step ProgressiveNorm side by side; records the γ each forward used."""

    def __init__(self, T: int = 6) -> None:
        super().__init__()
        self.fwd = ProgressiveNorm(4, T, counting="per_forward")
        self.glob = ProgressiveNorm(4, T, counting="global_step")
        self.head = nn.Linear(4, 1)
        self.used: list[tuple[float, float]] = []

    def training_step(self, batch, batch_idx):
        x = batch[0].view(-1, 2, 4)
        y = self.head(self.fwd(x) + self.glob(x)).mean()
        self.used.append((float(self.fwd.last_gamma), float(self.glob.last_gamma)))
        return y

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(32, 8))
        return torch.utils.data.DataLoader(data, batch_size=4)


def _fit(module: L.LightningModule, callbacks: list, **kwargs) -> L.Trainer:
    trainer = L.Trainer(max_steps=4, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1, **kwargs)
    trainer.fit(module)
    return trainer


def test_counting_modes_agree_without_accumulation():
    module = _TwoNorms()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*per_forward.*")
        trainer = _fit(module, [ProgressiveNormSchedule()])
    assert [f for f, _ in module.used] == [g for _, g in module.used]
    assert [f for f, _ in module.used] == pytest.approx([gamma_closed_form(s, 6) for s in range(4)])
    assert "train/repbn_gamma" in trainer.callback_metrics


def test_counting_modes_differ_with_accumulation_and_warn():
    module = _TwoNorms()
    with pytest.warns(UserWarning, match="accumulate_grad_batches=2"):
        _fit(module, [ProgressiveNormSchedule()], accumulate_grad_batches=2)
    fwd, glob = zip(*module.used, strict=True)
    assert len(fwd) == 8
    assert list(fwd) == pytest.approx([gamma_closed_form(s, 6) for s in range(8)])
    assert list(glob) == pytest.approx([gamma_closed_form(s // 2, 6) for s in range(8)])


def test_schedule_callback_flags_activation_checkpointing():
    model = nn.Sequential(ProgressiveNorm(4, 4))
    model.use_checkpoint = True
    trainer = SimpleNamespace(accumulate_grad_batches=1)
    with pytest.warns(UserWarning, match="activation checkpointing"):
        ProgressiveNormSchedule().on_fit_start(trainer, model)
    with pytest.raises(RuntimeError):
        ProgressiveNormSchedule(strict=True).on_fit_start(trainer, model)
    model[0].counting = "global_step"
    ProgressiveNormSchedule(strict=True).on_fit_start(trainer, model)  # nothing to warn about


# --- BN recalibration ----------------------------------------------------------------------------

class _Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = ProgressiveNorm(4, 3)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.drop(self.norm(self.fc(x.view(-1, 2, 4)))))

    def training_step(self, batch, batch_idx):
        return self(batch[0]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(16, 8) * 3 + 1)
        return torch.utils.data.DataLoader(data, batch_size=4)


class _Snapshot(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_recalibrate_bn_changes_only_bn_running_statistics():
    snap = _Snapshot()
    module = _Net()
    _fit(module, [snap, RecalibrateBN(epochs=2)])
    after = module.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, snap.state[k])}
    assert changed == {"norm.repbn.bn.running_mean", "norm.repbn.bn.running_var", "norm.repbn.bn.num_batches_tracked"}
    assert int(after["norm.repbn.bn.num_batches_tracked"]) == int(snap.state["norm.repbn.bn.num_batches_tracked"]) + 8
    assert module.training and module.norm.training  # modes restored


def test_recalibrate_bn_writes_last_ckpt_again(tmp_path):
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    module = _Net()
    trainer = L.Trainer(max_steps=4, callbacks=[checkpoint, RecalibrateBN(epochs=2)], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    for key in ("norm.repbn.bn.running_mean", "norm.repbn.bn.running_var", "norm.repbn.bn.num_batches_tracked"):
        assert torch.equal(saved[key], module.state_dict()[key]), key
    assert int(saved["norm.repbn.bn.num_batches_tracked"]) == 4 + 8  # training, then 2 recalibration epochs


def test_recalibrate_bn_function_restores_modes_and_needs_no_grad():
    model = _Net().eval()
    data = [(torch.randn(4, 8),) for _ in range(3)]
    assert recalibrate_bn(model, lambda: data, epochs=2, max_batches=2) == 4
    assert not model.training and not model.norm.repbn.bn.training
    assert all(p.grad is None for p in model.parameters())


# --- SLA ---------------------------------------------------------------------------------------

def _sla_reference(m: SimplifiedLinearAttention, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Float64, token by token: o_i = Σ_j (q_i·k_j) v_j / (Σ_j q_i·k_j + 1e-6) + DWC(v)_i, then proj."""
    x = x.double()
    b, n, c = x.shape
    h, d = m.num_heads, m.head_dim
    w_qkv, b_qkv = m.qkv.weight.double(), m.qkv.bias.double()
    q, k, v = (x @ w_qkv.T + b_qkv).split(c, dim=-1)
    if m.positional_encoding is not None:
        k = k + m.positional_encoding.double()
    q, k = q.clamp(min=0), k.clamp(min=0)
    w_dwc, b_dwc = m.dwc.weight.double(), m.dwc.bias.double()
    r = w_dwc.shape[-1] // 2
    out = torch.zeros(b, n, c, dtype=torch.float64)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        sim = torch.einsum("bid,bjd->bij", qh, kh)
        out[..., sl] = torch.einsum("bij,bjd->bid", sim, vh) / (sim.sum(-1, keepdim=True) + 1e-6)
        for i in range(n):
            row, col = divmod(i, width)
            acc = b_dwc.expand(b, d).clone()
            for dr in range(-r, r + 1):
                for dc in range(-r, r + 1):
                    if 0 <= row + dr < height and 0 <= col + dc < width:
                        acc += w_dwc[:, 0, dr + r, dc + r] * vh[:, (row + dr) * width + col + dc]
            out[:, i, sl] += acc
    return out @ m.proj.weight.double().T + m.proj.bias.double()


@pytest.mark.parametrize("window,hw,heads", [((3, 4), None, 2), (None, (2, 5), 2), ((4, 4), None, 1)])
def test_sla_matches_token_by_token_reference(window, hw, heads):
    m = _randomise(SimplifiedLinearAttention(8, heads, window, kernel_size=3), seed=1).eval()
    height, width = hw or window
    x = torch.randn(2, height * width, 8)
    out = m(x, *hw) if hw else m(x)
    torch.testing.assert_close(out.double(), _sla_reference(m, x, height, width), rtol=1e-4, atol=1e-5)


def test_sla_positional_term_is_zero_initialised_and_mask_refused():
    m = SimplifiedLinearAttention(8, 2, (2, 2))
    assert m.positional_encoding.shape == (1, 4, 8) and not m.positional_encoding.any()
    assert m.dwc.weight.shape == (4, 1, 5, 5) and m.dwc.bias is not None
    with pytest.raises(ValueError):
        m(torch.randn(1, 4, 8), mask=torch.zeros(1, 4, 4))


def test_sla_kernel_runs_in_fp32_under_bf16_autocast(monkeypatch):
    seen = []
    original = sla_module.sla_kernel

    def spy(q, k, v, eps=1e-6):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        out = original(q, k, v, eps)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(sla_module, "sla_kernel", spy)
    m = SimplifiedLinearAttention(16, 2, (4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 16, 16))
    assert seen == [(torch.float32, torch.float32, torch.float32, False), torch.float32]
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_sla_kernel_orders_agree():
    q, k, v = (torch.rand(2, n, d, dtype=torch.float64) for n, d in ((6, 3), (6, 3), (6, 3)))
    wide = (q @ (k.transpose(-2, -1) @ v)) / (q @ k.sum(-2, keepdim=True).transpose(-2, -1) + 1e-6)
    torch.testing.assert_close(sla_module.sla_kernel(q, k, v), wide)  # N > d: q(kᵀv)
    qs, ks, vs = q[:, :2], k[:, :2], v[:, :2]  # N = 2 < d = 3: (qkᵀ)v
    ref = (qs @ ks.transpose(-2, -1) @ vs) / (qs @ ks.sum(-2, keepdim=True).transpose(-2, -1) + 1e-6)
    torch.testing.assert_close(sla_module.sla_kernel(qs, ks, vs), ref)


# --- re-parameterisation -------------------------------------------------------------------------

def _norm64(kind: str = "repbn") -> nn.Module:
    norm = RepBN(6) if kind == "repbn" else ProgressiveNorm(6, 4)
    return _randomise(norm.double(), seed=3).eval()


@pytest.mark.parametrize("kind", ["repbn", "prepbn"])
@pytest.mark.parametrize("bias", [True, False])
def test_fold_into_following_linear(kind, bias):
    norm, linear = _norm64(kind), _randomise(nn.Linear(6, 5, bias=bias).double(), seed=4)
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    fused = fold_repbn_into_linear(norm, linear)
    torch.testing.assert_close(fused(x), linear(norm(x)), rtol=0, atol=1e-10)
    assert fused.bias is not None


def test_fold_after_linear():
    norm, linear = _norm64(), _randomise(nn.Linear(5, 6).double(), seed=5)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(fold_repbn_after_linear(linear, norm)(x), norm(linear(x)), rtol=0, atol=1e-10)


def test_fold_into_patch_embedding_and_the_release_formula():
    norm, conv = _norm64(), _randomise(nn.Conv2d(3, 6, 4, stride=4).double(), seed=6)
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    unfused = norm(conv(x).flatten(2).transpose(1, 2))
    fused = fold_repbn_into_conv(conv, norm)
    torch.testing.assert_close(fused(x).flatten(2).transpose(1, 2), unfused, rtol=0, atol=1e-10)
    release = fold_repbn_into_conv(conv, norm, release_formula=True)
    gap = release(x).flatten(2).transpose(1, 2) - unfused  # the release drops α·c
    torch.testing.assert_close(gap, -(norm.alpha * conv.bias).expand_as(gap), rtol=0, atol=1e-10)
    with torch.no_grad():
        conv.bias.zero_()
    torch.testing.assert_close(fold_repbn_into_conv(conv, norm, release_formula=True).weight,
                               fold_repbn_into_conv(conv, norm).weight)


def test_fold_in_float32_to_1e5():
    norm, linear = _randomise(RepBN(32), seed=7).eval(), _randomise(nn.Linear(32, 16), seed=8)
    x = torch.randn(4, 10, 32)
    torch.testing.assert_close(fold_repbn_into_linear(norm, linear)(x), linear(norm(x)), rtol=1e-5, atol=1e-5)


def test_final_norm_folds_into_residual_stream():
    """Stream h = reduction(x); h += fc2(gelu(fc1(n1(h)))); y = final(h) → same y without `final`."""
    reduction, fc1, fc2 = (_randomise(nn.Linear(6, 6).double(), seed=s) for s in (9, 10, 11))
    n1, final = _norm64(), _randomise(RepBN(6).double(), seed=12).eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    h = reduction(x)
    reference = final(h + fc2(F.gelu(fc1(n1(h)))))
    fc1 = fold_repbn_into_linear(n1, fc1)  # block-level merge first
    (reduction,), fc2, (fc1,) = fold_repbn_into_residual_stream(final, [reduction], fc2, [fc1])
    h = reduction(x)
    torch.testing.assert_close(h + fc2(F.gelu(fc1(h))), reference, rtol=0, atol=1e-10)


def test_fold_refuses_a_live_mixture():
    norm = ProgressiveNorm(6, 4, eval_mixture=True).eval()
    with pytest.raises(ValueError):
        repbn_affine(norm)
    norm.set_step(4)
    a, b = repbn_affine(norm)
    assert a.shape == b.shape == (6,)
