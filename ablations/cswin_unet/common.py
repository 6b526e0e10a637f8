"""What CSWin-UNet's four ablation tables share: recipe, metrics, where the paper's numbers stand."""
from __future__ import annotations

from ablations.framework.table import DICE, GMACS, HD95, PARAMS

RECIPE = "reproduce/configs/cswin_unet/synapse.yaml"
QUICK_RECIPE = "reproduce/configs/cswin_unet/quick.yaml"
NET = "model.init_args.net.init_args."
SEGMENTATION_METRICS = (DICE, HD95)
COMPLEXITY_METRICS = (PARAMS, GMACS)
UNKNOWN = {"mean_dice": None, "mean_hd95": None}
PAPER_SOURCE = (
    "CSWin-UNet (arXiv 2407.18070); the available source (shared/seeds/000_*.txt, summarised in "
    "shared/papers/cswin_unet.md §5) states the tables' conclusions but none of their numbers, so every "
    "paper value is unknown (None)."
)
