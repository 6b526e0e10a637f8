"""SLAB's decay-schedule table on DeiT-T: how γ goes from LayerNorm to RepBN, beside the plain norms.

    python reproduce/table_repbn_decay.py [--quick | --data-dir /data/imagenet] [--only prepbn_linear]

The paper compares linear, cosine and step decay of γ and keeps linear; it gives neither the
backbone, T nor the numbers of that comparison (shared/papers/slab.md §5), so the table is run on
the released SLAB-DeiT-T recipe (SLA attention, T = 60,000) with only the norm changed per row.
The cosine and step forms are the project's. The figure ``<stem>.gamma.png`` shows each PRepBN
row's γ against the step, read from its run's ``train/repbn_gamma``.
"""
from __future__ import annotations

from ablations.framework.table import PARAMS, SECONDS, AblationTable, Metric
from ablations.slab.common import decay_variants, norm_kwargs_of

RECIPE = "reproduce/configs/slab/deit_t.yaml"
QUICK_RECIPE = "reproduce/configs/slab/quick.yaml"
NET = "model.init_args.net.init_args."
# SLABVisionTransformer takes the norm's settings as one dict, which a later config replaces
# whole: a schedule row gives the recipe's (or the quick layer's) dict with its schedule.
NORM_KWARGS = {False: norm_kwargs_of(RECIPE), True: norm_kwargs_of(RECIPE, QUICK_RECIPE)}
TOP1 = Metric("test/top1", "Top-1 (%)", True)
TOP5 = Metric("test/top5", "Top-5 (%)", True)

TABLE = AblationTable(
    paper="slab", number=None, subject="repbn_decay",
    title="γ decay schedule of PRepBN, and LN / BN / RepBN, on SLAB-DeiT-T (ImageNet-1K)",
    dataset="imagenet", recipe=RECIPE, quick_recipe=QUICK_RECIPE,
    synthetic_data="reproduce/configs/_base_/synthetic_imagenet.yaml",
    metrics=(TOP1, TOP5, PARAMS, SECONDS),
    variants=decay_variants(
        lambda name: {NET + "norm": name},
        lambda schedule, quick: {NET + "norm": "prepbn",
                                 NET + "norm_kwargs": {**NORM_KWARGS[quick], "schedule": schedule}},
        (NORM_KWARGS[False]["T"], NORM_KWARGS[True]["T"]), {}),
    paper_source=(
        "SLAB (ICML 2024, arXiv 2405.11582). The decay-strategy ablation's numbers, backbone and T are not in "
        "the available sources (shared/papers/slab.md §5): every value is unknown (None). prepbn_linear is the "
        "released slab_deit_t recipe, whose checkpoint the release's README gives at 74.3 % top-1 (see the "
        "notes; not the ablation's number)."),
    seeds=(0,),
    notes=(
        "Released checkpoints' ImageNet top-1 (the release's README): deit_t_prepbn 73.6, deit_s_prepbn 80.2, "
        "slab_deit_t 74.3, slab_deit_s 80.0, swin_t_prepbn 81.4, slab_swin_t 81.8, slab_swin_s 83.6, "
        "slab_cswin_t 82.8 (%).",
        "cosine and step decay are project-defined (the official code has only linear decay); all three reach "
        "γ = 0 at the same T and differ only in the path.",
        "bn: plain BatchNorm in a transformer is known to diverge or underperform (paper; release issue #6).",
        "Evaluation after the release's BN recalibration (RecalibrateBN, 10 epochs; fewer in quick mode).",
        "The figure <stem>.gamma.png shows γ against the optimizer step for the PRepBN rows.",
    ),
    plots={"gamma": "ablations.slab.common:plot_gamma_curves"},
    quick_threads=1,
)
