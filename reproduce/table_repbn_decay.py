"""SLAB decay-schedule table (PRepBN γ decay; LN / BN / RepBN) — see ablations/slab/table_repbn_decay.py.

    python reproduce/table_repbn_decay.py                              # quick run on synthetic ImageNet-format data
    python reproduce/table_repbn_decay.py --data-dir /data/imagenet   # the released recipe on ImageNet-1K
    python reproduce/table_repbn_decay.py --help
"""
import _bootstrap  # noqa: F401  (the repository root on sys.path)

from ablations.framework.runner import main
from ablations.slab.table_repbn_decay import TABLE

if __name__ == "__main__":
    main(TABLE)
