"""Start a GLARE stage from the previous stage's weights: the authors' released files or this project's checkpoints.

* Stage I → II / III (:func:`load_stage1_weights`): the VQGAN, from the release's ``vqgan.pkl``
  (:func:`models.glare_vqgan.load_released_vqgan`; possibly test-contaminated, spec §3.3) or from a
  Lightning checkpoint of :class:`~lightning_modules.glare_stage1.GlareStage1Module` (``net.*`` = the
  VQGAN) or of any GLARE stage module (``net.vqgan.*``).
* Stage II → III (:func:`load_stage2_weights`): E_c + flow, from the release's Stage-II ``*_G.pth``
  (e.g. ``58250_G.pth``; :meth:`models.glare.GLARE.load_released`) or from a Lightning checkpoint of a
  Stage-II module (``net.stage2.*``, and its VQGAN ``net.vqgan.*``, the Stage-I weights it trained on).

Every weight of the part loaded must be in the file (a clear ``KeyError`` otherwise); a missing file
raises ``FileNotFoundError`` naming the argument to set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["is_lightning_checkpoint", "load_stage1_weights", "load_stage2_weights", "read_checkpoint"]


def read_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load`` of a user-given file on the CPU (weights only); ``what`` names the argument in errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file {path.absolute()} not found (give the previous stage's checkpoint: "
                                "this project's last.ckpt / best-*.ckpt, or the authors' released file)")
    from datamodules.synthetic_lol import SyntheticLowLight

    # a checkpoint of a datamodule built in Python (not by the CLI) holds this data-only dataclass in its hparams
    with torch.serialization.safe_globals([SyntheticLowLight]):
        return torch.load(path, map_location="cpu", weights_only=True)


def is_lightning_checkpoint(state: dict[str, Any]) -> bool:
    return isinstance(state, dict) and "pytorch-lightning_version" in state and "state_dict" in state


def _load_part(part: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    missing, unexpected = part.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{what} {path}: weights do not match {type(part).__name__} (missing {missing[:4]} of "
                       f"{len(missing)}, unexpected {unexpected[:4]} of {len(unexpected)}); is it a checkpoint of "
                       "the same configuration?")


def _subtree(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def load_stage1_weights(net, path: str | Path, what: str = "stage1_checkpoint") -> str:
    """Load the VQGAN of ``net`` (a :class:`~models.glare.GLARE`) from ``path``; returns what was loaded."""
    from models.glare_vqgan import load_released_vqgan

    state = read_checkpoint(path, what)
    path = Path(path)
    if not is_lightning_checkpoint(state):
        load_released_vqgan(path, net.vqgan)
        return f"released VQGAN {path.name} (possibly test-contaminated, spec §3.3)"
    weights = state["state_dict"]
    vqgan = _subtree(weights, "net.vqgan.") or _subtree(weights, "net.")
    _load_part(net.vqgan, vqgan, path, what)
    return f"Stage-I VQGAN from checkpoint {path.name}"


def load_stage2_weights(net, path: str | Path, what: str = "stage2_checkpoint") -> str:
    """Load E_c + flow of ``net`` (and its VQGAN, when the file is one of our Stage-II checkpoints)."""
    state = read_checkpoint(path, what)
    path = Path(path)
    if not is_lightning_checkpoint(state):
        net.load_released(net_g_path=path)
        return f"released Stage-II generator {path.name} (E_c + flow)"
    weights = state["state_dict"]
    _load_part(net.stage2, _subtree(weights, "net.stage2."), path, what)
    vqgan = _subtree(weights, "net.vqgan.")
    if vqgan and net.vqgan is not None:
        _load_part(net.vqgan, vqgan, path, what)
        return f"Stage-II E_c + flow and its VQGAN from checkpoint {path.name}"
    return f"Stage-II E_c + flow from checkpoint {path.name}"
