"""CSWin-UNet Table 8 loss_weights — see ablations/cswin_unet/table8_loss_weights.py.

    python reproduce/table8_loss_weights.py                               # quick run on synthetic Synapse-format data
    python reproduce/table8_loss_weights.py --data-dir /data/Synapse      # the paper recipe on the real release
    python reproduce/table8_loss_weights.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.cswin_unet.table8_loss_weights import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
