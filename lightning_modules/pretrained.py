"""User-given pretrained initialisation, applied only when training starts from scratch.

A network that supports it records the path in its constructor (``net.pretrained``,
never read there) and exposes ``net.load_pretrained()``. Testing, predicting or
resuming from a Lightning checkpoint overwrites every weight anyway, so the
pretrained file is then neither needed nor read.

Where to call it: ``trainer.ckpt_path`` is only filled in once Lightning starts
restoring a checkpoint, *after* the ``setup`` hook (Lightning 2.x: ``setup`` →
restore → ``on_fit_start``); in ``setup`` it is always None, even on resume. Call
:func:`load_pretrained_weights` from ``LightningModule.on_fit_start`` (weights are
loaded in place, so the optimizer built before it keeps pointing at them).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

if TYPE_CHECKING:
    import lightning as L

__all__ = ["DISABLE_HINT", "load_pretrained_weights"]

DISABLE_HINT = ("to train from random initialisation instead, pass "
                "`--model.init_args.net.init_args.pretrained null` (or set `pretrained: null` in the config)")


def load_pretrained_weights(net: nn.Module, trainer: L.Trainer | None, stage: str) -> bool:
    """Initialise `net` from its user-given pretrained file (net.load_pretrained()) only when training starts
    from scratch: stage == "fit" and trainer.ckpt_path is None. Returns whether it loaded.

    ``trainer=None`` counts as "from scratch". A net without ``load_pretrained`` or with
    ``pretrained`` None is left alone. A missing file raises ``FileNotFoundError`` naming
    it and saying how to disable the initialisation.
    """
    if stage != "fit" or getattr(trainer, "ckpt_path", None) is not None:
        return False
    loader = getattr(net, "load_pretrained", None)
    if loader is None or getattr(net, "pretrained", None) is None:
        return False
    try:
        report = loader()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; {DISABLE_HINT}") from error
    summary = getattr(report, "summary", None)
    rank_zero_info(f"pretrained initialisation: {summary() if callable(summary) else net.pretrained}")
    return True
