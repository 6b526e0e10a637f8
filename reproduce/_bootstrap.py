"""The one place that makes the repository importable from an entry script.

``python reproduce/<script>.py`` puts ``reproduce/`` (not the repository root) on
``sys.path``; every entry script starts with ``import _bootstrap`` to add the root.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
