"""Build runs of the real recipes for tests: configs + overrides → (model, datamodule, trainer)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ablations.framework.runner import REPO_ROOT, build_cli, nest

CONFIGS = REPO_ROOT / "reproduce" / "configs"
SMOKE = [CONFIGS / "cswin_unet" / "synapse.yaml", CONFIGS / "cswin_unet" / "smoke.yaml"]


def make_cli(tmp_path: Path, files: list[Path], **dotted: Any):
    """Instantiate a ReproCLI run (run=False) whose files all go under ``tmp_path``."""
    overrides = {
        "trainer.default_root_dir": str(tmp_path),
        "trainer.logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                            "init_args": {"save_dir": str(tmp_path), "name": "", "version": "run"}}],
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        **dotted,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(nest(overrides)))
    return build_cli(files, path)
