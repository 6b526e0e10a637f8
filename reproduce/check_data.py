"""Check a recipe's data set on its own, without training: every file, one report of all broken ones.

    python reproduce/check_data.py --config reproduce/configs/cswin_unet/synapse.yaml
    python reproduce/check_data.py --config reproduce/configs/cswin_unet/synapse.yaml \
                                   --data.init_args.data_dir /data/Synapse --level fast
    python reproduce/check_data.py --config reproduce/configs/cswin_unet/synapse.yaml \
                                   --config reproduce/configs/_base_/synthetic_synapse.yaml

The datamodule is built from the same ``--config`` files and ``--data.*`` overrides as
``reproduce/train.py`` (the recipe's LightningCLI; the model and trainer are not built),
then its ``check_data()`` runs (:mod:`datamodules.checks`). Own options:

    --level fast|full        headers only, or every array (default: full)
    --stage fit|validate|test|all
                             the files of one stage, or of all (default: all)
    --workers N              reading threads (default: the usable CPUs, at most 4)
    --no-cache               check every file, even if unchanged since an earlier check
    --no-progress            no progress bar

Exit status 0 with a one-line summary when every file is fine; 2 with the list of
every broken file (file: expected ...; found ...) otherwise.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _bootstrap  # noqa: F401  (the repository root on sys.path)

from datamodules.errors import exit_on_dataset_error
from lightning_modules.cli import build_from_recipe

STAGES = {"fit": "fit", "validate": "validate", "test": "test", "all": None}
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Check every file of a recipe's data set (any other argument goes to the recipe's CLI).",
        epilog="e.g. --config reproduce/configs/cswin_unet/synapse.yaml --data.init_args.data_dir /data/Synapse",
    )
    parser.add_argument("--level", choices=("fast", "full"), default="full")
    parser.add_argument("--stage", choices=tuple(STAGES), default="all")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    own, rest = parser.parse_known_args(list(argv))
    if rest and rest[0] in SUBCOMMANDS:  # a train.py command line pasted as is
        rest = rest[1:]
    if not any(a == "--config" or a.startswith("--config=") for a in rest):
        parser.error("give the recipe: --config <recipe.yaml> [--config <more.yaml>]")
    return own, rest


def build_datamodule(cli_args: Sequence[str]):
    """The datamodule of the recipe given by ``cli_args`` (``--config`` files, ``--data.*`` overrides)."""
    return build_from_recipe(cli_args)[1]


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every file is fine; bad data exits with status 2 and the list of broken files."""
    own, rest = parse_args(sys.argv[1:] if argv is None else argv)
    with exit_on_dataset_error():
        datamodule = build_datamodule(rest)
        check = getattr(datamodule, "check_data", None)
        if check is None:
            print(f"error: {type(datamodule).__name__} has no check_data(); nothing to check", file=sys.stderr)
            return 2
        report = check(STAGES[own.stage], own.level, progress=False if own.no_progress else None,
                       workers=own.workers, use_cache=not own.no_cache, print_summary=False)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
