"""Run every variant of an :class:`AblationTable`, then write and log the finished table.

The runner knows no task. Each variant × seed is one LightningCLI run of the
paper's recipe with the variant's overrides (written to ``overrides.yaml`` beside
the run, so the exact command can be repeated), trained and then tested with the
final weights. What it tabulates is what the task's LightningModule reports after
``test`` in ``test_report`` (a :class:`lightning_modules.metrics.MetricReport`:
flat ``/`` metric keys and a per-case table), plus parameters and MACs at the
network's registry input size (:func:`models.registry.input_size_for`).

Each run logs to a CSV logger and to W&B (``group=<paper>-table<N>``, ``job_type``,
tags ``[paper, dataset, table<N>, variant, data kind]``, name ``<variant>-s<seed>``).
A finished run leaves ``record.json`` in its folder; running the table again reuses
finished runs whose configuration is unchanged, so an interrupted table continues
with the missing runs only (``--restart`` trains everything again). The finished
table goes to ``results/<paper>/table<N>_<subject>[.<mode>].json`` (+ the Markdown
rendered from it and a bar chart), and to a W&B summary run with the
``wandb.Table``, the chart, and the results files and final checkpoints as artifacts.

Command line (every table script accepts it)::

    --quick            reduced width and schedule (default when no --data-dir is given)
    --full             the paper recipe (default with --data-dir)
    --data-dir PATH    the real data set; without it, the table's synthetic stand-in
    --only NAME        run only this variant (repeatable)
    --seeds N          number of seeds (default 3 in quick mode, the table's in full mode; from
                       the table's seeds, then the next integers)
    --restart          ignore finished runs of an earlier, interrupted invocation
    --dry-run          build every variant's model and data module, train nothing
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ablations.framework.provenance import REPO_ROOT, git_commit, hardware, library_versions, utc_now
from ablations.framework.publish import log_summary_run, write_results
from ablations.framework.table import AblationTable, Variant

DEFAULT_WANDB_PROJECT = "repro-seg"
RECORD_FILE = "record.json"


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


def run_overrides(
    table: AblationTable, variant: Variant, seed: int, run_dir: Path, data_dir: str | None, quick: bool,
    wandb_project: str,
) -> dict[str, Any]:
    """The dotted overrides of one run: the table's, the variant's, seeds, data and loggers."""
    data_kind = "real" if data_dir else "synthetic"
    overrides: dict[str, Any] = {**table.overrides, **variant.overrides, **(variant.quick_overrides if quick else {})}
    overrides["seed_everything"] = seed  # linked to data.init_args.seed
    if data_dir:
        overrides["data.init_args.data_dir"] = str(data_dir)
    overrides["trainer.default_root_dir"] = str(run_dir)
    overrides["trainer.logger"] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"project": wandb_project, "save_dir": str(run_dir), "name": run_dir.name,
                       "group": table.group, "job_type": "quick" if quick else "ablation",
                       "tags": [table.paper, table.dataset, table.tag, variant.name, data_kind]}},
    ]
    return overrides


def config_files(table: AblationTable, quick: bool, data_dir: str | None) -> list[Path]:
    """The recipe, then the quick layer, then the synthetic-data layer (without ``--data-dir``)."""
    files = [REPO_ROOT / table.recipe]
    if quick:
        files.append(REPO_ROOT / table.quick_recipe)
    if not data_dir:
        files.append(REPO_ROOT / table.synthetic_data)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"table {table.key}: config file(s) not found: {', '.join(missing)}")
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


def complexity_metrics(net: torch.nn.Module) -> dict[str, float]:
    """Parameters (M) and conv+linear MACs (G) of the network at its registry input size."""
    from lightning_modules.complexity import count_parameters, macs_conv_linear
    from models.registry import input_size_for

    params = count_parameters(net).total
    size = input_size_for(net)
    if size is None:
        return {"params_m": params / 1e6}
    x = torch.zeros(1, *size, device=next(net.parameters()).device)
    was_training = net.training
    try:
        return {"params_m": params / 1e6, "gmacs": macs_conv_linear(net, x) / 1e9}
    finally:
        net.train(was_training)


def display_path(path: str | Path | None) -> str | None:
    """``path`` relative to the repository root when inside it (results stay machine-independent)."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


#: Overrides that only say where a run's files go; a moved runs folder keeps its finished runs.
_LOCATION_KEYS = ("trainer.default_root_dir", "trainer.logger")


def _fingerprint(files: list[Path], overrides: dict[str, Any]) -> str:
    """Hash of everything that defines a run: the config files' text and the overrides (not the paths)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    defining = {k: v for k, v in overrides.items() if k not in _LOCATION_KEYS}
    digest.update(json.dumps(defining, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _finished_record(run_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    path = run_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("fingerprint") == fingerprint else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _test_metrics(model) -> dict[str, float]:
    report = getattr(model, "test_report", None)
    if report is None or not hasattr(report, "metrics"):
        raise TypeError(f"{type(model).__name__} reported no test results: a task LightningModule sets "
                        "self.test_report (lightning_modules.metrics.MetricReport) in on_test_epoch_end")
    return dict(report.metrics)


def _monitored_checkpoint(trainer) -> str:
    """The best checkpoint of the first ``ModelCheckpoint`` with a ``monitor`` (the recipe's model selection)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None):
            if not callback.best_model_path:
                raise RuntimeError(f"ModelCheckpoint(monitor={callback.monitor!r}) saved no checkpoint: "
                                   "was the monitored metric ever logged (is there a validation set)?")
            return callback.best_model_path
    raise ValueError("the table tests the 'best' checkpoint, but the recipe has no ModelCheckpoint with a monitor")


def test_with_checkpoints(table: AblationTable, trainer, model, datamodule) -> dict[str, float]:
    """Test the fitted model with each of ``table.test_checkpoints``; the first one's keys are unprefixed.

    ``last`` is tested first (the weights in memory), then ``best`` (loaded from its file).
    """
    metrics: dict[str, float] = {}
    for name in sorted(table.test_checkpoints, key=lambda n: n != "last"):
        ckpt_path = None if name == "last" else _monitored_checkpoint(trainer)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        prefix = "" if name == table.test_checkpoints[0] else f"{name}/"
        metrics.update({prefix + key: value for key, value in _test_metrics(model).items()})
    return metrics


def _last_checkpoint(trainer) -> str | None:
    callback = getattr(trainer, "checkpoint_callback", None)
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return path or None


def run_one(table: AblationTable, variant: Variant, seed: int, *, quick: bool, data_dir: str | None,
            runs_root: Path, wandb_project: str, dry_run: bool = False, restart: bool = False) -> dict[str, Any]:
    """Train + test one variant with one seed; returns the run record of the results JSON.

    A finished run with the same configuration (its ``record.json``) is reused unless ``restart``.
    """
    run_dir = runs_root / f"{variant.name}-s{seed}"
    overrides = run_overrides(table, variant, seed, run_dir, data_dir, quick, wandb_project)
    files = config_files(table, quick, data_dir)
    fingerprint = _fingerprint(files, overrides)
    if not (dry_run or restart):
        finished = _finished_record(run_dir, fingerprint)
        if finished is not None:
            finished["reused"] = True
            return finished
    if run_dir.exists() and not dry_run:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides_file = run_dir / "overrides.yaml"
    overrides_file.write_text(yaml.safe_dump(nest(overrides), sort_keys=False))
    cli = build_cli(files, overrides_file)
    shown = " ".join(f"--config {display_path(f)}" for f in [*files, overrides_file])
    command = f"python reproduce/train.py fit {shown}"
    if dry_run:
        return {"seed": seed, "metrics": {}, "run_dir": display_path(run_dir), "wandb_run": None, "command": command}
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    metrics = test_with_checkpoints(table, trainer, model, datamodule)
    metrics.update(complexity_metrics(model.net))
    metrics["train_test_seconds"] = time.perf_counter() - started
    wandb_run = _finish_wandb(trainer)
    record = {"seed": seed, "metrics": metrics, "run_dir": display_path(run_dir), "wandb_run": display_path(wandb_run),
              "command": command, "checkpoint": display_path(_last_checkpoint(trainer)), "fingerprint": fingerprint}
    _write_atomic(run_dir / RECORD_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


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


def parse_args(table: AblationTable, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=table.key,
        description=f"{table.paper} {table.label}: {table.title}. Without --data-dir it runs the quick "
                    "configuration on synthetic data (numbers are NOT comparable to the paper).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced width and schedule (default without --data-dir)")
    mode.add_argument("--full", action="store_true", help="the paper recipe (default with --data-dir)")
    parser.add_argument("--data-dir", help=f"root of the real {table.dataset} data set")
    parser.add_argument("--only", action="append", metavar="VARIANT",
                        help=f"run only these variants: {', '.join(v.name for v in table.variants)}")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"number of seeds per variant (default: {table.quick_seeds} in quick mode, "
                             f"{len(table.seeds)} with the paper recipe)")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "results"), help="where the table's JSON/MD/PNG go")
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="where each run's logs go")
    parser.add_argument("--wandb-project", default=DEFAULT_WANDB_PROJECT)
    parser.add_argument("--restart", action="store_true",
                        help="train every run again, even those an interrupted invocation finished")
    parser.add_argument("--dry-run", action="store_true", help="build every variant, train nothing")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
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
    from tqdm.auto import tqdm

    from lightning_modules.cli import configure_wandb_defaults

    # Each run folder holds its overrides.yaml before the CSV logger starts writing there.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    args = parse_args(table, argv)
    configure_wandb_defaults()
    quick = args.quick or not (args.full or args.data_dir)
    data_kind = "real" if args.data_dir else "synthetic"
    variants = [table.variant(name) for name in args.only] if args.only else list(table.variants)
    seeds = seeds_for(table, args.seeds or (table.quick_seeds if quick else len(table.seeds)))
    mode = f"{'quick' if quick else 'paper recipe'}, {data_kind} data"
    runs_root = Path(args.runs_dir) / table.paper / (table.key + ("-quick" if quick else "") + f"-{data_kind}")
    print(f"{table.paper} {table.label} ({table.title}): {len(variants)} variants × {len(seeds)} seeds, {mode}")
    if data_kind == "synthetic":
        print("NOTE: synthetic data — these numbers test the pipeline and compare variants on a toy task; "
              "they are not comparable to the paper's.")
    if quick and table.quick_threads:
        torch.set_num_threads(table.quick_threads)
    started = time.perf_counter()
    records: dict[str, list[dict]] = {}
    jobs = [(v, seed) for v in variants for seed in seeds]
    bar = tqdm(jobs, desc=table.key, unit="run", dynamic_ncols=True)
    for variant, seed in bar:
        bar.set_postfix_str(f"{variant.name} s{seed}")
        tqdm.write(f"\n[{variant.name} seed {seed}] {variant.description}")
        record = run_one(table, variant, seed, quick=quick, data_dir=args.data_dir, runs_root=runs_root,
                         wandb_project=args.wandb_project, dry_run=args.dry_run, restart=args.restart)
        records.setdefault(variant.name, []).append(record)
        if not args.dry_run:
            shown = ", ".join(f"{m.label} {record['metrics'].get(m.name, float('nan')):.{m.decimals}f}"
                              for m in table.metrics)
            seconds = record["metrics"]["train_test_seconds"]
            how = "reused a finished run" if record.get("reused") else f"{seconds:.0f} s"
            tqdm.write(f"    → {shown}  ({how})")
    bar.close()
    if args.dry_run:
        print(f"\nbuilt {len(jobs)} runs; nothing trained (--dry-run)")
        return None
    reused = sum(1 for runs in records.values() for r in runs if r.get("reused"))
    run_seconds = sum(r["metrics"].get("train_test_seconds", 0.0) for runs in records.values() for r in runs)
    reuse_note = (f"; {reused} finished run(s) of an interrupted invocation reused (the runs' own train + test "
                  f"times, reused ones included, sum to {run_seconds:.0f} s)" if reused else "")
    notes = list(table.notes) + [f"wall time of all runs: {time.perf_counter() - started:.0f} s "
                                 f"({torch.get_num_threads()} CPU threads, "
                                 f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}){reuse_note}"]
    results = {
        "schema": 1, "paper": table.paper, "table": table.number, "subject": table.subject, "title": table.title,
        "dataset": table.dataset, "data_kind": data_kind, "quick": quick, "recipe": table.recipe,
        "overrides": {**table.overrides, **({"quick_recipe": table.quick_recipe} if quick else {}),
                      **({"synthetic_data": table.synthetic_data} if data_kind == "synthetic" else {})},
        "commit": git_commit(), "environment": library_versions(), "machine": hardware(), "created": utc_now(),
        "seeds": seeds,
        "paper_source": table.paper_source,
        "metrics": [m.as_dict() for m in table.metrics],
        "variants": [
            {"name": v.name, "description": v.description,
             "overrides": {**v.overrides, **(v.quick_overrides if quick else {})},
             "paper": {m.name: v.paper.get(m.name) for m in table.metrics},
             "runs": [{k: r[k] for k in ("seed", "metrics", "run_dir", "wandb_run")} for r in records[v.name]]}
            for v in variants
        ],
        "notes": notes,
        **({"plots": dict(table.plots)} if table.plots else {}),
    }
    json_path = table.results_file(Path(args.out_dir), data_kind=data_kind, quick=quick)
    md_path = write_results(results, json_path)
    checkpoints = {f"{name}-s{r['seed']}": REPO_ROOT / r["checkpoint"] if r.get("checkpoint") else None
                   for name, runs in records.items() for r in runs}
    tags = [table.paper, table.dataset, table.tag, data_kind]
    wandb_dir = log_summary_run(json.loads(json_path.read_text()), json_path, project=args.wandb_project,
                                group=table.group, name=f"{table.key}-summary", tags=tags, runs_root=runs_root,
                                checkpoints=checkpoints)
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
    return os.environ.get("WANDB_MODE", "offline")
