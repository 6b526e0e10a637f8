"""GLARE on LOL (Table 1 row) — see ablations/glare/table1_lol.py.

    python reproduce/table1_glare_lol.py                                 # quick run on synthetic LOL-format data
    python reproduce/table1_glare_lol.py --data-dir /data/LOLdataset     # the released recipe on the real data set
    python reproduce/table1_glare_lol.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.framework.runner import main
from ablations.glare.table1_lol import TABLE

if __name__ == "__main__":
    main(TABLE)
