"""CSWin-UNet Table 8 loss_weights — see ablations/cswin_unet/table8_loss_weights.py.

    python reproduce/table8_loss_weights.py                               # quick run on synthetic Synapse-format data
    python reproduce/table8_loss_weights.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table8_loss_weights.py --help
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations.cswin_unet.table8_loss_weights import TABLE  # noqa: E402
from ablations.framework.runner import main  # noqa: E402

if __name__ == "__main__":
    main(TABLE)
