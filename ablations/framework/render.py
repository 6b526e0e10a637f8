"""Markdown rendering of an ablation table's results JSON (see :mod:`.results` for the schema).

The output depends on the JSON only (no clock, no environment), so CI can
check that every committed ``results/**/<table>.json`` re-renders to exactly
its sibling ``.md`` (:func:`markdown_diff`).
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ablations.framework.provenance import describe_hardware
from ablations.framework.table import table_label

__all__ = ["render_markdown", "render_file", "markdown_diff", "format_value", "format_delta"]

DASH = "—"


def _escape(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_value(value: float | None, decimals: int = 2) -> str:
    """``value`` with ``decimals`` decimals, ``—`` for None."""
    if value is None:
        return DASH
    text = f"{float(value):.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def format_delta(value: float | None, decimals: int = 2) -> str:
    """Signed ``value`` (``+1.23`` / ``-0.40``), ``—`` for None."""
    if value is None:
        return DASH
    text = f"{float(value):+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text


def _format_ours(mean: float | None, std: float | None, decimals: int) -> str:
    if mean is None:
        return DASH
    return f"{format_value(mean, decimals)} ± {format_value(std if std is not None else 0.0, decimals)}"


def _format_setting(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _format_overrides(overrides: Mapping[str, Any]) -> str:
    if not overrides:
        return "none"
    return ", ".join(f"`{k}={_format_setting(overrides[k])}`" for k in sorted(overrides))


def _data_line(results: Mapping[str, Any]) -> str:
    kind = str(results["data_kind"]).upper()
    dataset = results["dataset"]
    if results["data_kind"] == "synthetic":
        base = (
            f"**Data: SYNTHETIC** (a generated stand-in in the `{dataset}` format"
            f"{', quick mode' if results['quick'] else ''}). These numbers test the pipeline; "
            "they are not comparable with the paper's."
        )
    else:
        mode = (
            "quick mode: shortened recipe, not comparable with the paper's"
            if results["quick"]
            else "full recipe"
        )
        base = f"**Data: {kind}** (`{dataset}`, {mode})."
    return base


def render_markdown(results: Mapping[str, Any]) -> str:
    """Markdown page of one table: heading, data line, provenance, results table, sources, notes.

    ``results`` must already be finalised (``mean``/``std``/``delta`` present), as
    :func:`ablations.framework.results.write_results` and ``load_results`` give it.
    """
    metrics = list(results["metrics"])
    lines: list[str] = []
    label = table_label(results["table"], results["subject"])
    lines.append(f"# {results['paper']} — {label}: {results['title']}")
    lines.append("")
    lines.append(_data_line(results))
    lines.append("")
    seeds = ", ".join(str(s) for s in results["seeds"]) or DASH
    lines.append(f"- Table: `{results['paper']}` {label.replace('Table', 'table')} (`{results['subject']}`)")
    quick = ", quick" if results["quick"] else ""
    lines.append(f"- Dataset: `{results['dataset']}` ({results['data_kind']}{quick})")
    lines.append(f"- Recipe: `{results['recipe']}`")
    lines.append(f"- Common overrides: {_format_overrides(results.get('overrides', {}))}")
    lines.append(f"- Commit: `{results['commit']}`")
    lines.append(f"- Created: {results['created']}")
    if results.get("environment"):
        lines.append("- Environment: " + ", ".join(f"{k} {v}" for k, v in results["environment"].items()))
    if results.get("machine"):
        lines.append(f"- Machine: {describe_hardware(results['machine'])}")
    lines.append(f"- Seeds: {seeds}")
    lines.append("")

    header = ["Variant"]
    align = ["---"]
    for m in metrics:
        arrow = "↑" if m["higher_is_better"] else "↓"
        label = _escape(m["label"])
        header += [f"{label} {arrow} ours", f"{label} paper", f"{label} Δ"]
        align += ["---:", "---:", "---:"]
    header.append("Runs")
    align.append("---:")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(align) + "|")
    for v in results["variants"]:
        row = [f"`{_escape(v['name'])}`"]
        for m in metrics:
            n, dec = m["name"], int(m.get("decimals", 2))
            ours = _format_ours(v.get("mean", {}).get(n), v.get("std", {}).get(n), dec)
            counted = v.get("n_runs", {}).get(n)
            if ours != DASH and counted is not None and counted < len(v.get("runs", [])):
                ours += f" (n={counted})"  # some runs did not report this metric
            row.append(ours)
            row.append(format_value(v.get("paper", {}).get(n), dec))
            row.append(format_delta(v.get("delta", {}).get(n), dec))
        row.append(str(len(v.get("runs", []))))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Ours: mean ± sample standard deviation over seeds (ddof = 1; 0.00 for a single seed). "
        "Δ = ours − paper. ↑ higher is better, ↓ lower is better. — = unknown or not run."
    )
    lines.append("")
    lines.append(f"Paper numbers: {results['paper_source']}")
    lines.append("")

    lines.append("## Variants")
    lines.append("")
    for v in results["variants"]:
        desc = v.get("description") or ""
        text = f"- `{v['name']}`: {desc}" if desc else f"- `{v['name']}`:"
        lines.append(f"{text} (overrides: {_format_overrides(v.get('overrides', {}))})")
    lines.append("")

    lines.append("## Runs")
    lines.append("")
    run_header = ["Variant", "Seed"] + [_escape(m["label"]) for m in metrics] + ["Run dir", "W&B run"]
    lines.append("| " + " | ".join(run_header) + " |")
    lines.append("|" + "|".join(["---", "---:"] + ["---:"] * len(metrics) + ["---", "---"]) + "|")
    n_runs = 0
    for v in results["variants"]:
        for run in v.get("runs", []):
            n_runs += 1
            row = [f"`{_escape(v['name'])}`", _escape(run["seed"])]
            for m in metrics:
                row.append(format_value(run["metrics"].get(m["name"]), int(m.get("decimals", 2))))
            run_dir = run.get("run_dir")
            wandb_run = run.get("wandb_run")
            row.append(f"`{_escape(run_dir)}`" if run_dir else DASH)
            row.append(_escape(wandb_run) if wandb_run else DASH)
            lines.append("| " + " | ".join(row) + " |")
    if n_runs == 0:
        lines.append("| " + " | ".join([DASH] * len(run_header)) + " |")
    lines.append("")

    if results.get("plots"):
        lines.append("## Figures")
        lines.append("")
        lines.extend(f"- `<this file's stem>.{suffix}.png`, drawn by `{spec}`"
                     for suffix, spec in results["plots"].items())
        lines.append("")

    notes = list(results.get("notes", []))
    if notes:
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
        lines.append("")
    lines.append("<!-- Rendered by ablations/framework/render.py from the .json of the same name; do not edit -->")
    return "\n".join(lines) + "\n"


def render_file(json_path: str | Path) -> str:
    """Markdown of a results JSON file (validated on load)."""
    from .results import load_results

    return render_markdown(load_results(json_path))


def markdown_diff(json_path: str | Path) -> str:
    """Unified diff between the ``.md`` next to ``json_path`` and a fresh rendering; ``""`` if identical."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    expected = render_file(json_path)
    actual = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    if actual == expected:
        return ""
    return "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=str(md_path),
            tofile=f"render({json_path.name})",
        )
    )
