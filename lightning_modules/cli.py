"""The project's LightningCLI: layered YAML recipes, linked arguments, safe checkpoint loading, offline W&B.

Values that used to be written twice are linked (``parser.link_arguments``), so a
recipe states each once:

* ``seed_everything`` → ``data.init_args.seed`` (every datamodule takes ``seed``);
* the task module's own links, declared as ``cli_links`` on its class (e.g. the
  segmentation module links ``data.init_args.img_size`` → the net's ``img_size`` and
  ``model.init_args.num_classes`` → the net's ``num_classes``). The model class is
  read from the ``--config`` files / ``--model`` flag before the parser is built.

A linked target is derived: giving it in a config or on the command line is an
error, so change the source instead (``--data.init_args.img_size 128``).

The full resolved configuration, link targets included (every network, optimizer,
data and trainer setting), is saved as ``config.yaml`` beside the run and sent to
every logger's hyper-parameters, so the W&B run config holds every knob.

With ``REPRO_KEEP_FREED_MEMORY=1``, building the CLI also keeps freed memory in the process
(:mod:`lightning_modules.allocator`), for ``reproduce/train.py`` and the table runners alike.
A bf16 precision on a CPU without bf16 instructions gets a warning when the trainer is built
(:mod:`lightning_modules.cpu_precision`).
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lightning_modules.allocator import keep_freed_memory
from lightning_modules.cpu_precision import warn_if_cpu_lacks_bf16

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO_ROOT / "reproduce" / "configs" / "_base_" / "default.yaml"
# jsonargparse imports class paths while inside a config file's folder, so a relative
# sys.path entry ('' for `python -c`) would not find the project's packages.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: ``(source, target)`` pairs every recipe gets.
COMMON_LINKS: tuple[tuple[str, str], ...] = (("seed_everything", "data.init_args.seed"),)


def configure_wandb_defaults() -> None:
    """W&B runs stay on disk unless the user asks otherwise (``WANDB_MODE=online`` after ``wandb login``)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def _seed_value(seed: Any) -> int:
    """``seed_everything`` may be an int or a bool; the datamodule needs an int."""
    if isinstance(seed, bool) or seed is None:
        return 1234
    return int(seed)


def _option(args: Sequence[str], name: str) -> list[str]:
    """Values of ``--name X`` / ``--name=X`` in ``args``, in order."""
    values = []
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def model_class_path(args: Sequence[str]) -> str | None:
    """The ``model.class_path`` the command line selects (last one wins), or ``None`` if it names none."""
    found = None
    for config in _option(args, "--config"):
        try:
            data = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # LightningCLI reports unreadable configs itself
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and model.get("class_path"):
            found = model["class_path"]
    for flag in ("--model", "--model.class_path"):
        for value in _option(args, flag):
            if not value.endswith((".yaml", ".yml")):
                found = value
    return found


def task_links(class_path: str | None) -> tuple[tuple[str, str], ...]:
    """The ``cli_links`` declared by the task module named ``class_path`` (none if unknown)."""
    if not class_path or "." not in class_path:
        return ()
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return ()  # LightningCLI reports the bad class path itself
    return tuple(getattr(cls, "cli_links", ()))


class LoggedConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` beside the run and sends the same resolved config to every logger."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.loggers:
            return
        text = self.parser.dump(self.config, skip_none=False, skip_link_targets=False)
        config = yaml.safe_load(text)
        config.pop("config", None)  # the list of files given; the content is what matters
        for logger in trainer.loggers:
            logger.log_hyperparams({"cli": config})


class ReproCLI(LightningCLI):
    """``fit`` / ``validate`` / ``test`` with ``_base_/default.yaml`` applied under every recipe.

    Any LightningModule / LightningDataModule can be named by ``class_path``; checkpoints
    are loaded with ``weights_only=True`` unless the command line says otherwise.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        configure_wandb_defaults()
        keep_freed_memory()
        given = kwargs.get("args")
        argv = [str(a) for a in given] if isinstance(given, (list, tuple)) else sys.argv[1:]
        self._links = COMMON_LINKS + task_links(model_class_path(argv))
        base = {"default_config_files": [str(BASE_CONFIG)]}
        parser_kwargs = kwargs.pop("parser_kwargs", {})
        if kwargs.get("run", True):
            parser_kwargs = {sub: {**base, **parser_kwargs.get(sub, {})} for sub in ("fit", "validate", "test")}
        else:
            parser_kwargs = {**base, **parser_kwargs}
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", LoggedConfigCallback)
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            *args,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs=parser_kwargs,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in self._links:
            compute = _seed_value if source == "seed_everything" else None
            parser.link_arguments(source, target, compute_fn=compute)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        warn_if_cpu_lacks_bf16(trainer)
        return trainer

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


class RecipeOnlyCLI(ReproCLI):
    """A recipe's CLI parsed in full (configs, links), of which only the datamodule and, when
    ``with_model``, the LightningModule are built: no trainer, loggers or callbacks."""

    with_model = False

    def instantiate_classes(self) -> None:
        config = self.config.clone()
        if not self.with_model:
            config.model = None
        config.trainer.logger = None
        config.trainer.callbacks = None
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes
        self.config_init = instantiate(config)
        self.datamodule = self.config_init.get("data")
        self.model = self.config_init.get("model") if self.with_model else None
        self.trainer = None


def build_from_recipe(cli_args: Sequence[str], *, with_model: bool = False):
    """``(model or None, datamodule)`` of the recipe given by ``cli_args`` (``--config`` files, overrides)."""
    import sys

    cls = type("RecipeCLI", (RecipeOnlyCLI,), {"with_model": with_model})
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = cls(args=list(cli_args), run=False)
    finally:
        sys.argv = argv
    return cli.model, cli.datamodule
