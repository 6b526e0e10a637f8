"""Run every variant of an :class:`AblationTable`, then write and log the finished table.

Each variant × seed is one LightningCLI run of the paper's recipe with the variant's
overrides (written to ``overrides.yaml`` beside the run, so the exact command can be
repeated), trained and then tested on the test volumes with the final weights. It
logs to a CSV logger and to W&B (``group=<paper>-table<N>``, ``job_type``, tags
``[paper, dataset, table<N>, variant, data kind]``, name ``<variant>-s<seed>``).
The finished table goes to ``results/<paper>/table<N>_<subject>[.<mode>].json`` (+ the
Markdown rendered from it and a bar chart), and to W&B as a ``wandb.Table`` + image.

Command line (every table script accepts it)::

    --quick            reduced width and schedule (default when no --data-dir is given)
    --full             the paper recipe (default with --data-dir)
    --data-dir PATH    the real data set; without it, synthetic data in the same format
    --only NAME        run only this variant (repeatable)
    --seeds N          number of seeds (from the table's seeds, then 1235, 1236, ...)
    --dry-run          build every variant's model and data module, train nothing
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ablations.framework.results import git_commit, library_versions, utc_now, write_results
from ablations.framework.table import AblationTable, Variant

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WANDB_PROJECT = "repro-seg"


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` → ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r} conflicts with another override")
        node[leaf] = value
    return out


def results_path(table: AblationTable, data_kind: str, quick: bool, out_dir: Path) -> Path:
    """``table5_upsampling.json`` for the paper recipe on real data, else ``table5_upsampling.<mode>.json``."""
    mode = "" if (data_kind == "real" and not quick) else f".{'quick-' if quick else ''}{data_kind}"
    return out_dir / table.paper / f"{table.key}{mode}.json"


def run_overrides(
    table: AblationTable, variant: Variant, seed: int, run_dir: Path, data_dir: str | None, quick: bool,
    wandb_project: str,
) -> dict[str, Any]:
    """The dotted overrides of one run: the table's, the variant's, seeds, data and loggers."""
    data_kind = "real" if data_dir else "synthetic"
    overrides: dict[str, Any] = {**table.overrides, **variant.overrides}
    overrides["seed_everything"] = seed
    overrides["data.init_args.seed"] = seed
    if data_dir:
        overrides["data.init_args.data_dir"] = str(data_dir)
    overrides["trainer.default_root_dir"] = str(run_dir)
    overrides["trainer.logger"] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"project": wandb_project, "save_dir": str(run_dir), "name": run_dir.name,
                       "group": table.group, "job_type": "quick" if quick else "ablation",
                       "tags": [table.paper, table.dataset, f"table{table.number}", variant.name, data_kind]}},
    ]
    return overrides


def config_files(table: AblationTable, quick: bool, data_dir: str | None) -> list[Path]:
    files = [REPO_ROOT / table.recipe]
    if quick:
        files.append(REPO_ROOT / table.quick_recipe)
    if not data_dir:
        files.append(REPO_ROOT / "reproduce" / "configs" / "_base_" / f"synthetic_{table.dataset}.yaml")
    return files


def build_cli(files: list[Path], overrides_file: Path):
    """Instantiate trainer, model and data module of one run (nothing is trained)."""
    from lightning_modules.cli import ReproCLI

    args: list[str] = []
    for f in [*files, overrides_file]:
        args += ["--config", str(f)]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the table's own flags are not LightningCLI's
    try:
        return ReproCLI(args=args, run=False)
    finally:
        sys.argv = argv


def complexity_metrics(net: torch.nn.Module, img_size: int) -> dict[str, float]:
    """Parameters (M) and conv+linear MACs (G) of the network at its training input size."""
    from lightning_modules.complexity import count_parameters, macs_conv_linear

    params = count_parameters(net).total
    x = torch.zeros(1, 1, img_size, img_size, device=next(net.parameters()).device)
    return {"params_m": params / 1e6, "gmacs": macs_conv_linear(net, x) / 1e9}


def display_path(path: str | Path | None) -> str | None:
    """``path`` relative to the repository root when inside it (results stay machine-independent)."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def run_one(table: AblationTable, variant: Variant, seed: int, *, quick: bool, data_dir: str | None,
            runs_root: Path, wandb_project: str, dry_run: bool = False) -> dict[str, Any]:
    """Train + test one variant with one seed; returns the run record of the results JSON."""
    run_dir = runs_root / f"{variant.name}-s{seed}"
    if run_dir.exists() and not dry_run:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = run_overrides(table, variant, seed, run_dir, data_dir, quick, wandb_project)
    overrides_file = run_dir / "overrides.yaml"
    overrides_file.write_text(yaml.safe_dump(nest(overrides), sort_keys=False))
    files = config_files(table, quick, data_dir)
    cli = build_cli(files, overrides_file)
    shown = " ".join(f"--config {display_path(f)}" for f in [*files, overrides_file])
    command = f"python reproduce/train.py fit {shown}"
    if dry_run:
        return {"seed": seed, "metrics": {}, "run_dir": display_path(run_dir), "wandb_run": None, "command": command}
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    from lightning_modules.metrics import flatten_summary

    metrics = flatten_summary(model.test_summary)
    metrics.update(complexity_metrics(model.net, datamodule.img_size))
    metrics["train_test_seconds"] = time.perf_counter() - started
    wandb_run = _finish_wandb(trainer)
    return {"seed": seed, "metrics": metrics, "run_dir": display_path(run_dir), "wandb_run": display_path(wandb_run),
            "command": command}


def _finish_wandb(trainer) -> str | None:
    """Close the run's W&B experiment (so the next variant starts a new one); return its local dir."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            run = logger.experiment
            where = getattr(run, "dir", None)
            wandb.finish()
            return str(Path(where).parent) if where else None
    return None


def log_table_to_wandb(
    table: AblationTable, results: dict, png: Path, wandb_project: str, runs_root: Path
) -> str | None:
    """One summary run per table: the ``wandb.Table`` and the bar chart with error bars."""
    import wandb

    from ablations.framework.results import wandb_table

    tags = [table.paper, table.dataset, f"table{table.number}", results["data_kind"]]
    run = wandb.init(project=wandb_project, group=table.group, job_type="table", name=f"{table.key}-summary",
                     dir=str(runs_root), tags=tags,
                     config={"quick": results["quick"], "seeds": results["seeds"], "recipe": results["recipe"]},
                     reinit="finish_previous")
    run.log({f"{table.key}/table": wandb_table(results), f"{table.key}/chart": wandb.Image(str(png))})
    where = getattr(run, "dir", None)
    run.finish()
    return str(Path(where).parent) if where else None


def parse_args(table: AblationTable, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"table{table.number}_{table.subject}",
        description=f"{table.paper} Table {table.number}: {table.title}. Without --data-dir it runs the quick "
                    "configuration on synthetic data (numbers are NOT comparable to the paper).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced width and schedule (default without --data-dir)")
    mode.add_argument("--full", action="store_true", help="the paper recipe (default with --data-dir)")
    parser.add_argument("--data-dir", help=f"root of the real {table.dataset} data set")
    parser.add_argument("--only", action="append", metavar="VARIANT",
                        help=f"run only these variants: {', '.join(v.name for v in table.variants)}")
    parser.add_argument("--seeds", type=int, default=len(table.seeds), help="number of seeds per variant")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "results"), help="where the table's JSON/MD/PNG go")
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="where each run's logs go")
    parser.add_argument("--wandb-project", default=DEFAULT_WANDB_PROJECT)
    parser.add_argument("--dry-run", action="store_true", help="build every variant, train nothing")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    return args


def seeds_for(table: AblationTable, n: int) -> list[int]:
    seeds = list(table.seeds[:n])
    while len(seeds) < n:
        seeds.append(max(seeds) + 1)
    return seeds


def main(table: AblationTable, argv: list[str] | None = None) -> Path | None:
    """Run the table from the command line; returns the results JSON path (None for --dry-run).

    Bad data stops the table with one message naming the file (exit status 2).
    """
    from datamodules.errors import exit_on_dataset_error

    with exit_on_dataset_error():
        return _run_table(table, argv)


def _run_table(table: AblationTable, argv: list[str] | None) -> Path | None:
    from lightning_modules.cli import configure_wandb_defaults

    # Each run folder holds its overrides.yaml before the CSV logger starts writing there.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    args = parse_args(table, argv)
    configure_wandb_defaults()
    quick = args.quick or not (args.full or args.data_dir)
    data_kind = "real" if args.data_dir else "synthetic"
    variants = [table.variant(name) for name in args.only] if args.only else list(table.variants)
    seeds = seeds_for(table, args.seeds)
    mode = f"{'quick' if quick else 'paper recipe'}, {data_kind} data"
    runs_root = Path(args.runs_dir) / table.paper / (table.key + ("-quick" if quick else "") + f"-{data_kind}")
    print(f"{table.paper} Table {table.number} ({table.title}): {len(variants)} variants × {len(seeds)} seeds, {mode}")
    if data_kind == "synthetic":
        print("NOTE: synthetic data — these numbers test the pipeline and compare variants on a toy task; "
              "they are not comparable to the paper's.")
    started = time.perf_counter()
    records: dict[str, list[dict]] = {}
    total = len(variants) * len(seeds)
    for i, variant in enumerate(variants):
        for j, seed in enumerate(seeds):
            print(f"\n[{i * len(seeds) + j + 1}/{total}] {variant.name} (seed {seed}) — {variant.description}")
            record = run_one(table, variant, seed, quick=quick, data_dir=args.data_dir, runs_root=runs_root,
                             wandb_project=args.wandb_project, dry_run=args.dry_run)
            records.setdefault(variant.name, []).append(record)
            if not args.dry_run:
                shown = ", ".join(f"{m.label} {record['metrics'].get(m.name, float('nan')):.{m.decimals}f}"
                                  for m in table.metrics)
                print(f"    → {shown}  ({record['metrics']['train_test_seconds']:.0f} s)")
    if args.dry_run:
        print(f"\nbuilt {total} runs; nothing trained (--dry-run)")
        return None
    results = {
        "schema": 1, "paper": table.paper, "table": table.number, "subject": table.subject, "title": table.title,
        "dataset": table.dataset, "data_kind": data_kind, "quick": quick, "recipe": table.recipe,
        "overrides": {**table.overrides, **({"quick_recipe": table.quick_recipe} if quick else {})},
        "commit": git_commit(), "environment": library_versions(), "created": utc_now(), "seeds": seeds,
        "paper_source": table.paper_source,
        "metrics": [m.as_dict() for m in table.metrics],
        "variants": [
            {"name": v.name, "description": v.description, "overrides": v.overrides,
             "paper": {m.name: v.paper.get(m.name) for m in table.metrics},
             "runs": [{k: r[k] for k in ("seed", "metrics", "run_dir", "wandb_run")} for r in records[v.name]]}
            for v in variants
        ],
        "notes": list(table.notes) + [f"wall time of all runs: {time.perf_counter() - started:.0f} s "
                                      f"({torch.get_num_threads()} CPU threads, "
                                      f"{'CUDA' if torch.cuda.is_available() else 'CPU only'})"],
    }
    json_path = results_path(table, data_kind, quick, Path(args.out_dir))
    md_path = write_results(results, json_path)
    wandb_dir = log_table_to_wandb(table, json.loads(json_path.read_text()), json_path.with_suffix(".png"),
                                   args.wandb_project, runs_root)
    print(f"\nresults: {json_path}\n         {md_path}\n         {json_path.with_suffix('.png')}")
    print(f"runs (CSV logs, configs, overlays, checkpoints): {runs_root}")
    print(f"W&B: group {table.group!r} in project {args.wandb_project!r}, mode {_wandb_mode()}"
          + (f"; summary run at {wandb_dir}" if wandb_dir else "")
          + ("; upload later with `wandb sync` on those folders" if _wandb_mode() == "offline" else ""))
    if data_kind == "synthetic":
        print("These are SYNTHETIC-data numbers (pipeline check), not a reproduction of the paper's table.")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return json_path


def _wandb_mode() -> str:
    import os

    return os.environ.get("WANDB_MODE", "offline")
