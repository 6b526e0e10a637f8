"""The project's LightningCLI: layered YAML recipes, safe checkpoint loading, offline W&B."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO_ROOT / "reproduce" / "configs" / "_base_" / "default.yaml"
# jsonargparse imports class paths while inside a config file's folder, so a relative
# sys.path entry ('' for `python -c`) would not find the project's packages.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def configure_wandb_defaults() -> None:
    """W&B runs stay on disk unless the user asks otherwise (``WANDB_MODE=online`` after ``wandb login``)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


class ReproCLI(LightningCLI):
    """``fit`` / ``validate`` / ``test`` with ``_base_/default.yaml`` applied under every recipe.

    Any LightningModule / LightningDataModule can be named by ``class_path``; checkpoints
    are loaded with ``weights_only=True`` unless the command line says otherwise; the
    resolved config is saved beside every run (``config.yaml``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        configure_wandb_defaults()
        base = {"default_config_files": [str(BASE_CONFIG)]}
        parser_kwargs = kwargs.pop("parser_kwargs", {})
        if kwargs.get("run", True):
            parser_kwargs = {sub: {**base, **parser_kwargs.get(sub, {})} for sub in ("fit", "validate", "test")}
        else:
            parser_kwargs = {**base, **parser_kwargs}
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            *args,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs=parser_kwargs,
            **kwargs,
        )

    def _weights_only_default(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True

    def before_fit(self) -> None:
        self._weights_only_default()

    def before_validate(self) -> None:
        self._weights_only_default()

    def before_test(self) -> None:
        self._weights_only_default()
