"""CSWin-UNet Table 7 block_depths — see ablations/cswin_unet/table7_block_depths.py.

    python reproduce/table7_block_depths.py                               # quick run on synthetic Synapse-format data
    python reproduce/table7_block_depths.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table7_block_depths.py --help
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations.cswin_unet.table7_block_depths import TABLE  # noqa: E402
from ablations.framework.runner import main  # noqa: E402

if __name__ == "__main__":
    main(TABLE)
