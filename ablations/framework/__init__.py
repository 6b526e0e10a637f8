"""Shared machinery for the ablation tables: results schema, Markdown rendering, plots.

``results`` and ``render`` are imported eagerly (light); ``plots`` (matplotlib)
and ``wandb`` are imported only when used.
"""
from .render import markdown_diff, render_file, render_markdown
from .results import (
    SCHEMA_VERSION,
    aggregate_runs,
    compute_delta,
    finalize_results,
    git_commit,
    load_results,
    utc_now,
    validate_results,
    wandb_table,
    write_results,
)

__all__ = [
    "SCHEMA_VERSION",
    "aggregate_runs",
    "compute_delta",
    "finalize_results",
    "git_commit",
    "load_results",
    "markdown_diff",
    "render_file",
    "render_markdown",
    "utc_now",
    "validate_results",
    "wandb_table",
    "write_results",
]
