"""GLARE Table 5 (I-LNF vs L1) — see ablations/glare/table5_ilnf_vs_l1.py.

    python reproduce/table5_ilnf_vs_l1.py                                 # quick run on synthetic LOL-format data
    python reproduce/table5_ilnf_vs_l1.py --data-dir /data/LOLdataset     # the released recipe on the real data set
    python reproduce/table5_ilnf_vs_l1.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.framework.runner import main
from ablations.glare.table5_ilnf_vs_l1 import TABLE

if __name__ == "__main__":
    main(TABLE)
