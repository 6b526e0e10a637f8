"""CSWin-UNet Table 6 skip_connections — see ablations/cswin_unet/table6_skip_connections.py.

    python reproduce/table6_skip_connections.py                           # quick run, synthetic data
    python reproduce/table6_skip_connections.py --data-dir /data/Synapse  # the paper recipe, real data
    python reproduce/table6_skip_connections.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.cswin_unet.table6_skip_connections import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
