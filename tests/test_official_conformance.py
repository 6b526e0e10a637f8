"""Our modules against the outputs of the authors' released code (../shared/fixtures/official)."""
from __future__ import annotations

import json

import pytest
import torch

from models.official import check_manifest, components, coverage, discover_cases, discover_manifests, fixtures_root

ROOT = fixtures_root()
CASES = discover_cases(ROOT)
MANIFESTS = discover_manifests(ROOT)
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"official fixtures not found at {ROOT}")


def _component(path) -> str:
    return json.loads(path.read_text())["component"]


def _case_id(case_dir) -> str:
    return str(case_dir.relative_to(ROOT))


@pytest.mark.parametrize("case_dir", CASES, ids=[_case_id(c) for c in CASES])
def test_official_case(case_dir):
    from models.official import run_case

    component = _component(case_dir / "case.json")
    if component not in components():
        pytest.skip(f"not covered yet: {component}")
    for name, ours, expected, tolerance in run_case(case_dir):
        where = f"{case_dir.name}/{name}"
        torch.testing.assert_close(ours, expected, **tolerance, msg=lambda m, where=where: f"{where}: {m}")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[_case_id(m) for m in MANIFESTS])
def test_official_manifest(manifest):
    component = _component(manifest)
    if component not in components():
        pytest.skip(f"not covered yet: {component}")
    assert check_manifest(manifest) == json.loads(manifest.read_text())["num_params"]


def test_report_coverage(capsys):
    covered, missing = coverage(ROOT)
    with capsys.disabled():
        print(f"\nofficial fixtures covered: {', '.join(covered)}")
        print(f"official fixtures NOT covered yet ({len(missing)}): {', '.join(missing)}")
    assert {"cswin_unet/model", "cswin_unet/cswin_block", "cswin_unet/carafe", "convformer/pooling", "convformer/csa",
            "convformer/block", "convformer/setr", "convformer/setr_convformer"} <= set(covered)
