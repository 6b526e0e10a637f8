"""SLAB decay-schedule table on CSWin-UNet (segmentation) — see ablations/slab/table_repbn_decay_cswin_unet.py.

    python reproduce/table_repbn_decay_cswin_unet.py                             # quick run, synthetic Synapse
    python reproduce/table_repbn_decay_cswin_unet.py --data-dir /data/Synapse   # the Synapse recipe
    python reproduce/table_repbn_decay_cswin_unet.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.framework.runner import main
from ablations.slab.table_repbn_decay_cswin_unet import TABLE

if __name__ == "__main__":
    main(TABLE)
