"""RepBN and the progressive LayerNorm → RepBN of SLAB (Guo et al., ICML 2024, arXiv 2405.11582).

* :class:`RepBN`: ``BN(x) + α·x`` on tokens ``(B, N, C)`` (the paper's η is the release's ``alpha``).
* :class:`ProgressiveNorm` (the release's ``LinearNorm``): ``γ·LN(x) + (1 − γ)·RepBN(x)``, γ going
  1 → 0 over ``T`` steps after an optional pure-LN warm-up.

BatchNorm and LayerNorm are torch's own modules (the release uses exactly these). The mixing is
written here because nothing in torch/timm implements it.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

__all__ = ["RepBN", "ProgressiveNorm", "SCHEDULES", "COUNTING_MODES", "gamma_closed_form",
           "official_progressive_norm_key"]

SCHEDULES = ("linear", "cosine", "step")
COUNTING_MODES = ("per_forward", "global_step")


class RepBN(nn.Module):
    """``RepBN(x) = BatchNorm1d(C)(x) + α·x`` with one learnable scalar ``α`` (initialised 1).

    ``x``: ``(B, N, C)`` tokens (statistics over B × N), a channels-last map ``(B, H, W, C)``
    (statistics over B × H × W, as on its H·W tokens) or ``(B, C)``; output has x's shape.
    State-dict keys are the release's: ``alpha`` (shape ``[1]``), ``bn.*``.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.bn(x) + self.alpha * x
        if x.dim() > 3:  # channels-last map (B, ..., C): the same norm on its flattened tokens
            return self.forward(x.reshape(x.shape[0], -1, x.shape[-1])).reshape(x.shape)
        if x.dim() != 3:
            raise ValueError(f"RepBN expects (B, N, C), (B, ..., C) or (B, C), got shape {tuple(x.shape)}")
        return self.bn(x.transpose(1, 2)).transpose(1, 2) + self.alpha * x


def gamma_closed_form(step: int, total: int, schedule: str = "linear", r0: float = 1.0, warmup: int = 0,
                      step_k: int = 4) -> float:
    """γ after ``step`` schedule steps (warm-up included), as a float; the reference for tests.

    * linear (the release): ``r0·(T − s)/T``;
    * cosine (project-defined): ``r0·½(1 + cos(π·s/T))``;
    * step (project-defined, ``k = step_k``): ``r0·(1 − ⌊k·s/T⌋/k)``;

    with ``s = min(max(step − warmup, 0), T)``; γ = 1 during warm-up (pure LN), ``T = 0`` gives 0.
    """
    if step < warmup:
        return 1.0
    if total <= 0:
        return 0.0
    s = min(step - warmup, total)
    if schedule == "linear":
        return r0 * (total - s) / total
    if schedule == "cosine":
        return r0 * 0.5 * (1.0 + math.cos(math.pi * s / total))
    if schedule == "step":
        return r0 * (1.0 - math.floor(step_k * s / total) / step_k)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


class ProgressiveNorm(nn.Module):
    """PRepBN: ``γ·LayerNorm(x) + (1 − γ)·RepBN(x)`` on ``(B, N, C)``, γ scheduled 1 → 0 over ``T`` steps.

    Schedules (``schedule``): ``"linear"`` is the release's ``γ = r0·t/T`` with ``t`` counting down
    from T to 0; ``"cosine"`` and ``"step"`` (``step_k`` equal drops) are project-defined (the paper
    names them, the release has neither); see :func:`gamma_closed_form`.

    State (int64 buffers, saved in checkpoints; the release's ``warm``/``iter``/``total_step``):
    ``warmup_left`` (pure-LN forwards left), ``steps_left`` (t, T → 0), ``total_steps`` (T).

    Counting (``counting``):

    * ``"per_forward"`` (the release): every training-mode forward computes γ from the buffers,
      then advances them (warm-up first, then t ← t − 1, stopping at 0).
    * ``"global_step"`` (the project's recommended training mode): forwards never advance the buffers;
      :class:`lightning_modules.slab_callbacks.ProgressiveNormSchedule` calls :meth:`set_step`
      with ``trainer.global_step`` before every training batch, so gradient accumulation and
      re-run forwards (activation checkpointing) do not change the schedule. Both give the same
      γ sequence when each optimizer step makes exactly one training forward.

    Training forwards always run the BN branch (it updates its running statistics even at γ = 1,
    and during the warm-up too — the release's warm-up behaviour is not pinned by any fixture,
    and no released config uses a warm-up). Eval forwards return ``RepBN(x)`` only, whatever γ
    is, as released; ``eval_mixture=True`` evaluates the γ-mixture instead. Eval never counts.

    :meth:`set_gamma` pins γ to a fixed value (``None`` returns to the schedule); :attr:`gamma`
    is the γ the next training forward uses; :attr:`last_gamma` the one the last forward used.
    """

    def __init__(self, dim: int, T: int, warmup: int = 0, schedule: str = "linear", counting: str = "per_forward",
                 eval_mixture: bool = False, r0: float = 1.0, ln_eps: float = 1e-5, bn_eps: float = 1e-5,
                 step_k: int = 4) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if counting not in COUNTING_MODES:
            raise ValueError(f"counting must be one of {COUNTING_MODES}, got {counting!r}")
        if T < 0 or warmup < 0 or step_k < 1:
            raise ValueError(f"need T >= 0, warmup >= 0, step_k >= 1; got {T}, {warmup}, {step_k}")
        self.dim, self.warmup, self.schedule, self.counting = dim, warmup, schedule, counting
        self.eval_mixture, self.r0, self.step_k = eval_mixture, r0, step_k
        self.ln = nn.LayerNorm(dim, eps=ln_eps)
        self.repbn = RepBN(dim, eps=bn_eps)
        self.register_buffer("warmup_left", torch.tensor(warmup, dtype=torch.long))
        self.register_buffer("steps_left", torch.tensor(T, dtype=torch.long))
        self.register_buffer("total_steps", torch.tensor(T, dtype=torch.long))
        self._gamma_override: float | None = None
        self._stepped = False  # global_step mode: set_step() seen (warn once if training without it)
        self.last_gamma: torch.Tensor | None = None

    @property
    def T(self) -> int:
        return int(self.total_steps)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, T={self.T}, warmup={self.warmup}, schedule={self.schedule!r}, "
                f"counting={self.counting!r}, eval_mixture={self.eval_mixture}")

    def _gamma_tensor(self) -> torch.Tensor:
        """γ as a float32 0-dim tensor (no host sync); the linear form is the release's expression."""
        if self._gamma_override is not None:
            return torch.tensor(self._gamma_override, dtype=torch.float32, device=self.steps_left.device)
        total = self.total_steps
        if self.schedule == "linear":
            gamma = self.r0 * self.steps_left / total.clamp(min=1)
        else:
            s = (total - self.steps_left).double()
            frac = s / total.clamp(min=1).double()
            if self.schedule == "cosine":
                gamma = self.r0 * 0.5 * (1.0 + torch.cos(math.pi * frac))
            else:
                gamma = self.r0 * (1.0 - torch.floor(self.step_k * s / total.clamp(min=1)) / self.step_k)
            gamma = gamma.float()
        return torch.where(self.warmup_left > 0, torch.ones_like(gamma), gamma)

    @property
    def gamma(self) -> float:
        """γ the next training forward will use."""
        return float(self._gamma_tensor())

    def set_gamma(self, value: float | None) -> None:
        """Pin γ to ``value`` for training (and mixed eval) forwards; ``None`` returns to the schedule."""
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {value}")
        self._gamma_override = None if value is None else float(value)

    @torch.no_grad()
    def set_step(self, step: int) -> None:
        """Set the counters as after ``step`` schedule steps (warm-up first); clears :meth:`set_gamma`."""
        step = max(int(step), 0)
        self.warmup_left.fill_(max(self.warmup - step, 0))
        self.steps_left.fill_(self.T - min(max(step - self.warmup, 0), self.T))
        self._gamma_override = None
        self._stepped = True

    @torch.no_grad()
    def _advance(self) -> None:
        in_warmup = self.warmup_left > 0
        self.steps_left.sub_((~in_warmup & (self.steps_left > 0)).long())
        self.warmup_left.sub_(in_warmup.long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, N, C)`` → ``(B, N, C)``."""
        if not self.training and not self.eval_mixture:
            return self.repbn(x)
        gamma = self._gamma_tensor()
        out = gamma * self.ln(x) + (1 - gamma) * self.repbn(x)
        if self.training:
            self.last_gamma = gamma.detach()
            if self.counting == "per_forward":
                self._advance()
            elif not self._stepped and self._gamma_override is None:
                self._stepped = True
                warnings.warn("ProgressiveNorm(counting='global_step') is training without set_step(): gamma stays "
                              "put (add lightning_modules.slab_callbacks.ProgressiveNormSchedule)", stacklevel=2)
        return out


_OFFICIAL_BUFFERS = {"warmup_left": "warm", "steps_left": "iter", "total_steps": "total_step"}


def official_progressive_norm_key(key: str) -> str:
    """:class:`ProgressiveNorm` key → the release's ``LinearNorm`` key (``norm1``/``norm2``/``warm``/``iter``)."""
    if key in _OFFICIAL_BUFFERS:
        return _OFFICIAL_BUFFERS[key]
    for ours, theirs in (("ln.", "norm1."), ("repbn.", "norm2.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(f"no official counterpart for ProgressiveNorm key {key!r}")
