"""GLARE tables' extra figure: each row's test images (input | output | reference) side by side."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ablations.framework.provenance import REPO_ROOT

TRIPLETS = Path("triplets") / "test.png"  # written by lightning_modules.enhancement.EnhancementTriplets


def plot_test_triplets(results: Mapping[str, Any], png_path: str | Path) -> None:
    """``<stem>.triplets.png``: per variant, its first seed's ``<run>/triplets/test.png``, stacked
    with the variant's name; a variant whose run wrote none is named as missing."""
    import matplotlib.image as mpimg
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for variant in results["variants"]:
        runs = [r for r in variant["runs"] if r.get("run_dir")]
        path = REPO_ROOT / runs[0]["run_dir"] / TRIPLETS if runs else None
        seed = runs[0]["seed"] if runs else None
        panels.append((variant["name"], seed, mpimg.imread(path) if path and path.is_file() else None))
    fig = Figure(figsize=(7, 5.2 * len(panels)))
    FigureCanvasAgg(fig)
    for i, (name, seed, image) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        ax.axis("off")
        if image is None:
            ax.text(0.5, 0.5, f"{name}: no {TRIPLETS} in its run folder", ha="center", va="center")
            continue
        ax.imshow(image)
        ax.set_title(f"{name} (seed {seed})", fontsize=11)
    kind = "SYNTHETIC data" if results.get("data_kind") == "synthetic" else "real data"
    fig.suptitle(f"{results['paper']} Table {results['table']}: test images, input | output | reference ({kind})")
    fig.tight_layout()
    fig.savefig(Path(png_path), dpi=100)
