"""CSWin-UNet Table 5 upsampling — see ablations/cswin_unet/table5_upsampling.py.

    python reproduce/table5_upsampling.py                               # quick run on synthetic Synapse-format data
    python reproduce/table5_upsampling.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table5_upsampling.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.cswin_unet.table5_upsampling import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
