"""CSWin-UNet Table 5 upsampling — see ablations/cswin_unet/table5_upsampling.py.

    python reproduce/table5_upsampling.py                               # quick run on synthetic Synapse-format data
    python reproduce/table5_upsampling.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table5_upsampling.py --help
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations.cswin_unet.table5_upsampling import TABLE  # noqa: E402
from ablations.framework.runner import main  # noqa: E402

if __name__ == "__main__":
    main(TABLE)
