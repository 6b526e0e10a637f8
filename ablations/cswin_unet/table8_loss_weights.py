"""CSWin-UNet Table 8: loss weights α (cross-entropy) and β (Dice) on Synapse.

    python reproduce/table8_loss_weights.py [--quick | --data-dir /data/Synapse]
"""
from __future__ import annotations

from ablations.cswin_unet.common import UNKNOWN, synapse_table
from ablations.framework.table import Variant

WEIGHTS = ((1.0, 0.0), (0.0, 1.0), (0.6, 0.4), (0.5, 0.5), (0.4, 0.6))

TABLE = synapse_table(
    8, "loss_weights", "Loss weights α (CE) and β (Dice)",
    tuple(
        Variant(f"ce{a:g}_dice{b:g}", {"model.init_args.loss_weights": [a, b]},
                f"α={a:g}, β={b:g}" + {(1.0, 0.0): " (CE only)", (0.0, 1.0): " (Dice only)",
                                       (0.4, 0.6): " (released)"}.get((a, b), ""), UNKNOWN)
        for a, b in WEIGHTS
    ),
    paper_says="Five settings were compared; CE-only and Dice-only are implied by the text and the "
               "released code uses α=0.4, β=0.6.",
    notes=("α=0.6/β=0.4 and α=β=0.5 are the project's choice for the two settings the paper does not name.",),
)
