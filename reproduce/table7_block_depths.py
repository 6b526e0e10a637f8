"""CSWin-UNet Table 7 block_depths — see ablations/cswin_unet/table7_block_depths.py.

    python reproduce/table7_block_depths.py                               # quick run on synthetic Synapse-format data
    python reproduce/table7_block_depths.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table7_block_depths.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.cswin_unet.table7_block_depths import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
