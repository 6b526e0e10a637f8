"""Conformance with the authors' released code: the one place mapping fixture components to our modules.

A fixture case (``../shared/fixtures/official/<paper>/<component>/<case>/``, see
that folder's README) names a ``component`` id such as ``cswin_unet/carafe``. Each
paper's adapter module here (discovered: every ``models/official/<paper>.py``)
registers, per id, how to

* ``build``   our module from the official constructor ``config`` (official names),
* ``convert`` the official ``state_dict`` into our layout (for a built module),
* ``run``     the case's ``inputs`` through our module, returning outputs by name.

:func:`run_case` and :func:`check_manifest` do the rest; ``python -m models.official``
prints which fixture components are covered.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "OfficialComponent",
    "register_component",
    "components",
    "fixtures_root",
    "discover_cases",
    "discover_manifests",
    "load_case",
    "run_case",
    "check_manifest",
    "coverage",
    "rename_exactly",
]

Builder = Callable[[dict[str, Any]], nn.Module]
Converter = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
Runner = Callable[[nn.Module, dict[str, torch.Tensor], dict[str, Any]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class OfficialComponent:
    component: str
    build: Builder
    convert: Converter
    run: Runner


_COMPONENTS: dict[str, OfficialComponent] = {}


def rename_exactly(state: dict[str, torch.Tensor], module: nn.Module, to_official) -> dict[str, torch.Tensor]:
    """Invert an ours→official key function over ``module``'s keys; an official key without a counterpart raises."""
    inverse = {to_official(k): k for k in module.state_dict()}
    unknown = sorted(set(state) - set(inverse))
    if unknown:
        raise KeyError(f"official keys without a counterpart: {unknown[:5]}")
    return {inverse[k]: v for k, v in state.items()}


def register_component(component: str, *, build: Builder, convert: Converter, run: Runner) -> None:
    if component in _COMPONENTS:
        raise ValueError(f"conformance component {component!r} registered twice")
    _COMPONENTS[component] = OfficialComponent(component, build, convert, run)


def components() -> dict[str, OfficialComponent]:
    """All registered component adapters, by id.

    Every module of this package (one per paper: ``models/official/<paper>.py``) is
    imported once; importing it registers its components. A new paper adds a file.
    """
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(_COMPONENTS)


def fixtures_root() -> Path:
    """``$REPRO_OFFICIAL_FIXTURES`` or ``../shared/fixtures/official`` beside the project root."""
    env = os.environ.get("REPRO_OFFICIAL_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"


def discover_cases(root: Path | None = None) -> list[Path]:
    """Every case folder (one holding a ``case.json``) under ``root``, sorted."""
    root = root or fixtures_root()
    return sorted(p.parent for p in root.rglob("case.json")) if root.is_dir() else []


def discover_manifests(root: Path | None = None) -> list[Path]:
    root = root or fixtures_root()
    return sorted(root.rglob("manifest*.json")) if root.is_dir() else []


def _float32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if torch.is_floating_point(v) else v for k, v in tensors.items()}


def load_case(case_dir: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(case.json, official state_dict as float32, inputs, expected outputs)."""
    case = json.loads((case_dir / "case.json").read_text())
    state = torch.load(case_dir / "state_dict.pt", map_location="cpu", weights_only=True)
    io = torch.load(case_dir / "io.pt", map_location="cpu", weights_only=True)
    return case, _float32(state), io["inputs"], io["outputs"]


def run_case(case_dir: Path) -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    """Build, convert, load strictly, run; returns ``(name, ours, expected, tolerance)`` per output.

    Raises ``KeyError`` if the component has no adapter yet.
    """
    case, state, inputs, expected = load_case(case_dir)
    adapter = components()[case["component"]]
    module = adapter.build(case["config"])
    module.load_state_dict(adapter.convert(state, module), strict=True)
    if case.get("num_params") is not None:
        ours = sum(p.numel() for p in module.parameters())
        if ours != case["num_params"]:
            raise AssertionError(f"{case_dir}: {ours} parameters, official {case['num_params']}")
    module.train(case.get("mode") == "train_sequence")
    with torch.no_grad():
        outputs = adapter.run(module, inputs, case)
    missing = set(expected) - set(outputs)
    if missing:
        raise AssertionError(f"{case_dir}: adapter produced no {sorted(missing)}")
    tolerance = case.get("tolerance", {"rtol": 1e-4, "atol": 1e-5})
    return [(name, outputs[name], expected[name], tolerance) for name in sorted(expected)]


def check_manifest(manifest_path: Path) -> int:
    """Build the full-size model of a manifest and check names/shapes load strictly; returns #params."""
    manifest = json.loads(manifest_path.read_text())
    adapter = components()[manifest["component"]]
    module = adapter.build(manifest["config"])
    official = {name: torch.zeros(shape) for name, shape in manifest["params"] + manifest.get("buffers", [])}
    module.load_state_dict(adapter.convert(official, module), strict=True)
    ours = sum(p.numel() for p in module.parameters())
    if ours != manifest["num_params"]:
        raise AssertionError(f"{manifest_path}: {ours} parameters, official {manifest['num_params']}")
    return ours


def coverage(root: Path | None = None) -> tuple[list[str], list[str]]:
    """(covered, not covered) component ids among the fixtures under ``root``."""
    ids = set()
    for case_dir in discover_cases(root):
        ids.add(json.loads((case_dir / "case.json").read_text())["component"])
    for manifest in discover_manifests(root):
        ids.add(json.loads(manifest.read_text())["component"])
    known = components()
    return sorted(ids & known.keys()), sorted(ids - known.keys())
