"""The recipes' compile switch (``--model.init_args.compile true``), written once for every task module.

Each part is compiled in place (``nn.Module.compile``), so state-dict keys, and checkpoints, stay
as they are. A network whose work is not done by its own ``forward`` (GLARE: the stages call
encoders, the flow and decoders through methods) names the parts to compile in a
``compile_parts() -> {name: module}`` method; any other network is compiled whole.

    compile_network(task, task.net, mode=None)   # from configure_model; a second call does nothing
"""
from __future__ import annotations

from torch import nn


def compile_parts(net: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` to compile: ``net.compile_parts()`` where defined, else ``{"": net}``."""
    parts = net.compile_parts() if hasattr(net, "compile_parts") else {"": net}
    for name, module in parts.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"{type(net).__name__}.compile_parts()[{name!r}] is a {type(module).__name__}, "
                            "not an nn.Module")
    return parts


def compile_network(task: nn.Module, net: nn.Module, mode: str | None = None) -> list[str]:
    """Compile :func:`compile_parts` of ``net`` in place, once per ``task``; returns the names compiled."""
    if getattr(task, "_compiled", False):
        return []
    parts = compile_parts(net)
    for module in parts.values():
        module.compile(mode=mode)
    task._compiled = True
    return list(parts)
