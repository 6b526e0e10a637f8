"""CSWin-UNet Table 7: CSWin blocks per stage (the decoder mirrors the encoder) on Synapse.

    python reproduce/table7_block_depths.py [--quick | --data-dir /data/Synapse]
"""
from __future__ import annotations

from ablations.cswin_unet.common import COMPLEXITY_METRICS, NET, SEGMENTATION_METRICS, UNKNOWN, synapse_table
from ablations.framework.table import Variant

DEPTHS = ((1, 1, 1, 1), (1, 2, 3, 1), (1, 2, 6, 1), (1, 2, 9, 1))

TABLE = synapse_table(
    7, "block_depths", "Blocks per stage",
    tuple(
        Variant("d" + "".join(map(str, d)), {NET + "depths": list(d)},
                f"depths {list(d)}" + (" (released)" if d == (1, 2, 9, 1) else ""), UNKNOWN)
        for d in DEPTHS
    ),
    metrics=SEGMENTATION_METRICS + COMPLEXITY_METRICS,
    paper_says="The paper keeps the last stage at 1 block and reports [1, 2, 9, 1] as best.",
    notes=("The settings other than [1, 2, 9, 1] are the project's choice: the paper's are unknown.",),
)
