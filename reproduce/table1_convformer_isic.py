"""ConvFormer Table 1 (ISIC 2018) — see ablations/convformer/table1_attention_isic.py.

    python reproduce/table1_convformer_isic.py                          # quick run on synthetic ISIC 2018-format data
    python reproduce/table1_convformer_isic.py --data-dir /data/ISIC2018   # the paper recipe on the real data set
    python reproduce/table1_convformer_isic.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.convformer.table1_attention_isic import TABLE
from ablations.framework.runner import main

if __name__ == "__main__":
    main(TABLE)
