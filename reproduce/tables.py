"""List every paper table: its paper, number, data set, command, and whether results exist.

    python reproduce/tables.py            # a Markdown table on stdout
    python reproduce/tables.py --json     # the same as JSON
"""
import argparse
import json
import sys

import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.framework.catalog import all_tables, entry_script
from ablations.framework.provenance import REPO_ROOT


def rows() -> list[dict]:
    out = []
    for table in all_tables():
        results = REPO_ROOT / "results"
        quick = table.results_file(results, data_kind="synthetic", quick=True)
        full = table.results_file(results, data_kind="real", quick=False)
        out.append({"paper": table.paper, "table": table.number, "title": table.title, "dataset": table.dataset,
                    "command": table.command, "script_exists": entry_script(table).is_file(),
                    "quick_results": str(quick.relative_to(REPO_ROOT)) if quick.is_file() else None,
                    "full_results": str(full.relative_to(REPO_ROOT)) if full.is_file() else None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print("| paper | table | title | data set | command | quick (synthetic) | full (real) |")
        print("|---|---:|---|---|---|---|---|")
        for r in table:
            command = f"`{r['command']}`" + ("" if r["script_exists"] else " (missing!)")
            number = "—" if r["table"] is None else r["table"]
            print(f"| {r['paper']} | {number} | {r['title']} | {r['dataset']} | {command} | "
                  f"{'yes' if r['quick_results'] else 'no'} | {'yes' if r['full_results'] else 'no'} |")
    return 0 if all(r["script_exists"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
