"""SLAB's decay-schedule table on CSWin-UNet (Synapse): the method tried on segmentation.

    python reproduce/table_repbn_decay_cswin_unet.py [--quick | --data-dir /data/Synapse]

A project extension beyond both papers (SLAB is evaluated on classification and detection
only): the three γ schedules of the DeiT-T table (ablations/slab/table_repbn_decay.py) and
its LayerNorm reference row, on the CSWin-UNet Synapse recipe. The BN / RepBN rows are left
to that table, so the quick run's 4 rows × 3 seeds fit in 10 minutes. The block norms are
swapped through ``CSWinUNet(norm=..., T=..., schedule=...)`` (models/cswin_unet_slab.py) and
the stripe attention is kept, so only the norm changes; ``ln`` is the faithful CSWin-UNet.
Every row adds the ProgressiveNormSchedule and RecalibrateBN callbacks (10 recalibration
epochs, 1 in quick mode).
"""
from __future__ import annotations

from ablations.cswin_unet.common import DICE, HD95, QUICK_RECIPE, RECIPE, SYNTHETIC_DATA
from ablations.framework.table import PARAMS, SECONDS, AblationTable, Metric
from ablations.slab.common import decay_variants

NET = "model.init_args.net.init_args."
#: 0.8 × the run's steps: the recipe's 150 epochs × 93 batches, the quick layer's 38 × 8
T = (11_160, 243)
NORMS = {"ln": "layernorm", "bn": "bn", "repbn": "repbn"}
GALLBLADDER = Metric("test/dice/gallbladder", "Gallbladder DSC (%)", True)


def _callbacks(recalibration_epochs: int) -> dict:
    return {"trainer.callbacks+": [
        {"class_path": "lightning_modules.slab_callbacks.ProgressiveNormSchedule"},
        {"class_path": "lightning_modules.slab_callbacks.RecalibrateBN",
         "init_args": {"epochs": recalibration_epochs}}]}


TABLE = AblationTable(
    paper="slab", number=None, subject="repbn_decay_cswin_unet",
    title="γ decay schedule of PRepBN, and LN / BN / RepBN, in CSWin-UNet (Synapse; project extension)",
    dataset="synapse", recipe=RECIPE, quick_recipe=QUICK_RECIPE, synthetic_data=SYNTHETIC_DATA,
    metrics=(DICE, HD95, GALLBLADDER, PARAMS, SECONDS),
    variants=decay_variants(
        lambda name: {NET + "norm": NORMS[name]},
        lambda schedule, quick: {NET + "norm": "prepbn", NET + "schedule": schedule, NET + "T": T[quick]},
        T, {}, common=(_callbacks(10), _callbacks(1)), norm_rows=("ln",)),
    paper_source=("No paper number: SLAB is not evaluated on segmentation and CSWin-UNet does not use "
                  "PRepBN. Every value is unknown (None)."),
    seeds=(1234,),
    notes=(
        "Project extension: SLAB's progressive norm in CSWin-UNet's blocks (encoder and decoder), stripe "
        "attention unchanged; ln is the faithful CSWin-UNet.",
        "cosine and step decay are project-defined; T = 0.8 × the run's steps (SLAB release issues #3, #6).",
        "The figure <stem>.gamma.png shows γ against the optimizer step for the PRepBN rows.",
    ),
    plots={"gamma": "ablations.slab.common:plot_gamma_curves"},
    quick_threads=1,
)
