"""What CSWin-UNet's four ablation tables share: recipe, metrics, where the paper's numbers stand."""
from __future__ import annotations

from collections.abc import Iterable

from ablations.framework.table import GMACS, PARAMS, AblationTable, Metric, Variant

RECIPE = "reproduce/configs/cswin_unet/synapse.yaml"
QUICK_RECIPE = "reproduce/configs/cswin_unet/quick.yaml"
SYNTHETIC_DATA = "reproduce/configs/_base_/synthetic_synapse.yaml"
NET = "model.init_args.net.init_args."
DICE = Metric("test/mean_dice", "DSC (%)", True)
HD95 = Metric("test/mean_hd95", "HD95 (voxels)", False)
SEGMENTATION_METRICS = (DICE, HD95)
COMPLEXITY_METRICS = (PARAMS, GMACS)
UNKNOWN = {DICE.name: None, HD95.name: None}
PAPER_SOURCE = (
    "CSWin-UNet (arXiv 2407.18070); the available source (shared/seeds/000_*.txt, summarised in "
    "shared/papers/cswin_unet.md §5) states the tables' conclusions but none of their numbers, so every "
    "paper value is unknown (None)."
)


def synapse_table(
    number: int,
    subject: str,
    title: str,
    variants: Iterable[Variant],
    *,
    paper_says: str,
    metrics: tuple[Metric, ...] = SEGMENTATION_METRICS,
    notes: tuple[str, ...] = (),
) -> AblationTable:
    """One of CSWin-UNet's Synapse ablation tables; ``paper_says`` is the paper's stated conclusion."""
    return AblationTable(
        paper="cswin_unet", number=number, subject=subject, title=title, dataset="synapse",
        recipe=RECIPE, quick_recipe=QUICK_RECIPE, synthetic_data=SYNTHETIC_DATA, metrics=metrics,
        variants=tuple(variants),
        paper_source=f"{PAPER_SOURCE} {paper_says}", notes=notes,
    )
