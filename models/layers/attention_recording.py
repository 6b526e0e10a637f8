"""The attention-recording contract, written once for every network that has attention layers.

An attention module takes part by holding a boolean ``record_attention`` (default
False) and, while it is set, keeping the map it applies to the values as
``last_attention`` ``(B, heads, N_query, N_key)`` (detached). A network inherits
:class:`AttentionRecording` to switch all of its layers at once; the attention-collapse
diagnostic (:mod:`lightning_modules.attention_collapse`) uses :func:`recording_modules`.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["recording_modules", "AttentionRecording"]


def recording_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module following the contract, in registration (= forward) order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(getattr(m, "record_attention", None), bool)]


class AttentionRecording:
    """Mixin for an ``nn.Module``: :meth:`record_attention` switches, :meth:`attention_maps` reads."""

    def attention_modules(self) -> list[nn.Module]:
        """The attention layers, in forward order."""
        return [m for _, m in recording_modules(self)]

    def record_attention(self, enabled: bool = True) -> None:
        """Make every attention layer store (or stop storing, and forget) the matrix it applies to V."""
        for module in self.attention_modules():
            module.record_attention = enabled
            if not enabled:
                module.last_attention = None

    def attention_maps(self) -> list[torch.Tensor | None]:
        """Per layer, the last recorded ``(B, heads, N_query, N_key)`` map (``None`` if not recorded)."""
        return [module.last_attention for module in self.attention_modules()]
