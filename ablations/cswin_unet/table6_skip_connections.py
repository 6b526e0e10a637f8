"""CSWin-UNet Table 6: number of skip connections (3/2/1/0) on Synapse.

Skips are removed from the coarsest scale first (1/16, then 1/8, then 1/4), as the paper does.

    python reproduce/table6_skip_connections.py [--quick | --data-dir /data/Synapse]
"""
from __future__ import annotations

from ablations.cswin_unet.common import NET, UNKNOWN, synapse_table
from ablations.framework.table import Variant

KEPT = {3: "1/4, 1/8, 1/16", 2: "1/4, 1/8", 1: "1/4", 0: "none"}

TABLE = synapse_table(
    6, "skip_connections", "Number of skip connections",
    tuple(
        Variant(f"skips{n}", {NET + "num_skips": n}, f"{n} skip connection(s) kept: {KEPT[n]}"
                + (" (released)" if n == 3 else ""), UNKNOWN)
        for n in (3, 2, 1, 0)
    ),
    paper_says="The paper reports accuracy rising with the number of skips, most for small organs.",
    notes=("A removed skip drops its concat + Linear; the upsampler output feeds the decoder stage directly "
           "(the paper does not say what replaces it). Per-organ Dice of every run is in the JSON.",),
)
