"""ConvFormer Table 2 (alpha) — see ablations/convformer/table2_alpha.py.

    python reproduce/table2_alpha.py                          # quick run on synthetic ACDC-format data
    python reproduce/table2_alpha.py --data-dir /data/ACDC   # the paper recipe on the real data set
    python reproduce/table2_alpha.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.convformer.table2_alpha import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
