"""ConvFormer Table 1 (ACDC) — see ablations/convformer/table1_attention_acdc.py.

    python reproduce/table1_convformer_acdc.py                          # quick run on synthetic ACDC-format data
    python reproduce/table1_convformer_acdc.py --data-dir /data/ACDC   # the paper recipe on the real data set
    python reproduce/table1_convformer_acdc.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.convformer.table1_attention_acdc import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
