"""Publishing a finished table: JSON + Markdown + PNG under ``results/``, and the W&B summary run.

Imports go one way: ``publish`` → ``render`` / ``plots`` → ``results``.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .render import render_markdown
from .results import dumps_results, extra_plot_paths, finalize_results, results_paths

__all__ = ["write_results", "wandb_table", "log_summary_run"]


def write_results(results: Mapping[str, Any], json_path: str | Path, *, plot: bool = True) -> Path:
    """Finalise ``results`` and write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``.

    The Markdown is rendered from the JSON text just written (parsed back), so
    re-rendering the committed JSON reproduces it byte for byte. ``plot=False``
    skips the PNGs. Each of ``results["plots"]`` (``{suffix: "module:function"}``) draws
    ``<stem>.<suffix>.png`` with ``function(final_results, png_path)``. Returns the Markdown path.
    """
    json_p, md_p, png_p = results_paths(json_path)
    text = dumps_results(finalize_results(results))
    final = json.loads(text)
    json_p.parent.mkdir(parents=True, exist_ok=True)
    json_p.write_text(text, encoding="utf-8")
    md_p.write_text(render_markdown(final), encoding="utf-8")
    if plot:
        from .plots import save_plot

        save_plot(final, png_p)
        for suffix, path in extra_plot_paths(json_p, final).items():
            _plot_function(final["plots"][suffix])(final, path)
    return md_p


def _plot_function(spec: str):
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"a table plot is named 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def wandb_table(results: Mapping[str, Any]):
    """The finished table as a ``wandb.Table``.

    Columns: ``variant``, then for each metric ``<name>_mean``, ``<name>_std``,
    ``<name>_paper`` (``None`` where unknown). ``wandb`` is imported here only.
    """
    import wandb

    final = finalize_results(results)
    names = [m["name"] for m in final["metrics"]]
    columns = ["variant"]
    for n in names:
        columns += [f"{n}_mean", f"{n}_std", f"{n}_paper"]
    rows = []
    for v in final["variants"]:
        row: list[Any] = [v["name"]]
        for n in names:
            row += [v["mean"][n], v["std"][n], v["paper"][n]]
        rows.append(row)
    return wandb.Table(columns=columns, data=rows)


def log_summary_run(results: Mapping[str, Any], json_path: Path, *, project: str, group: str, name: str,
                    tags: Sequence[str], runs_root: Path, checkpoints: Mapping[str, Path]) -> str | None:
    """One W&B run per table: the ``wandb.Table``, the chart, and the files as artifacts.

    Artifacts: ``<name>-results`` (type ``results``: the JSON, Markdown and PNG) and
    ``<name>-checkpoints`` (type ``model``: each run's final checkpoint, named
    ``<variant>-s<seed>.ckpt``). Returns the run's local folder.
    """
    import wandb

    json_p, md_p, png_p = results_paths(json_path)
    run = wandb.init(project=project, group=group, job_type="table", name=name, dir=str(runs_root),
                     tags=list(tags), reinit="finish_previous",
                     config={"quick": results["quick"], "seeds": results["seeds"], "recipe": results["recipe"],
                             "data_kind": results["data_kind"], "commit": results["commit"]})
    extra = extra_plot_paths(json_p, results)
    payload = {f"{name}/table": wandb_table(results)}
    for key, path in {"chart": png_p, **extra}.items():
        if path.exists():
            payload[f"{name}/{key}"] = wandb.Image(str(path))
    run.log(payload)
    files = wandb.Artifact(f"{name}-results", type="results",
                           metadata={"data_kind": results["data_kind"], "commit": results["commit"]})
    for path in (json_p, md_p, png_p, *extra.values()):
        if path.exists():
            files.add_file(str(path))
    run.log_artifact(files)
    existing = {key: Path(p) for key, p in checkpoints.items() if p and Path(p).exists()}
    if existing:
        models = wandb.Artifact(f"{name}-checkpoints", type="model", metadata={"runs": sorted(existing)})
        for key, path in sorted(existing.items()):
            models.add_file(str(path), name=f"{key}.ckpt")
        run.log_artifact(models)
    where = getattr(run, "dir", None)
    run.finish()
    # The run's records are written by W&B's service process; shutting it down waits for them to be on
    # disk, so the folder printed for `wandb sync` is complete (finish() alone once returned before
    # an offline summary run's file held more than its header). The next wandb.init starts a new one.
    wandb.teardown()
    return str(Path(where).parent) if where else None
