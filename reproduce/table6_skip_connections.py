"""CSWin-UNet Table 6 skip_connections — see ablations/cswin_unet/table6_skip_connections.py.

    python reproduce/table6_skip_connections.py                           # quick run, synthetic data
    python reproduce/table6_skip_connections.py --data-dir /data/Synapse  # the paper recipe, real data
    python reproduce/table6_skip_connections.py --help
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations.cswin_unet.table6_skip_connections import TABLE  # noqa: E402
from ablations.framework.runner import main  # noqa: E402

if __name__ == "__main__":
    main(TABLE)
