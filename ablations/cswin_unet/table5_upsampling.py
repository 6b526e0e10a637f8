"""CSWin-UNet Table 5: upsampling strategy (bilinear vs transposed convolution vs CARAFE) on Synapse.

    python reproduce/table5_upsampling.py [--quick | --data-dir /data/Synapse] [--only carafe] [--seeds 3]
"""
from __future__ import annotations

from ablations.cswin_unet.common import COMPLEXITY_METRICS, NET, SEGMENTATION_METRICS, UNKNOWN, synapse_table
from ablations.framework.table import Variant

TABLE = synapse_table(
    5, "upsampling", "Upsampling strategy",
    (
        Variant("bilinear", {NET + "upsampler": "bilinear"},
                "bilinear ×σ + 1×1 projection at the four upsampling points (our definition; the paper gives none)",
                UNKNOWN),
        Variant("transposed", {NET + "upsampler": "transposed"},
                "ConvTranspose2d, kernel = stride = σ (our definition; the paper gives none)", UNKNOWN),
        Variant("carafe", {NET + "upsampler": "carafe"},
                "CARAFE as released: k_up 3, k_enc 3, compressor C/4, 1×1 output projection", UNKNOWN),
    ),
    metrics=SEGMENTATION_METRICS + COMPLEXITY_METRICS,
    paper_says="The paper reports CARAFE as best, adding little compute over transposed convolution.",
)
