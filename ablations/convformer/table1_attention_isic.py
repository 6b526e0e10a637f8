"""ConvFormer Table 1, ISIC 2018 columns: each backbone × the five attention types.

    python reproduce/table1_convformer_isic.py [--quick | --data-dir /data/ISIC2018] [--only patcher_convformer]
"""
from __future__ import annotations

from ablations.convformer.common import ATTENTIONS, BACKBONES, backbone_variant, convformer_table

TABLE = convformer_table(
    1, "attention_isic", "Anti-collapse attention types on three backbones", "isic2018",
    tuple(backbone_variant(b, a, in_channels=3) for b in BACKBONES for a in ATTENTIONS),
    script="table1_convformer_isic",
    notes=("Paper text: with ConvFormer, SETR's Dice rises on average by 1.38 and Patcher's by 1.07 on ISIC 2018. "
           "TransUNet and Patcher are reconstructed.",
           "Model selection on the test split is the release's protocol (shared/papers/convformer.md §3), "
           "so the 'best' numbers are optimistic; the last-checkpoint column is not.",
           "TransFuse and FAT-Net (the paper's other two backbones) are not built."),
    plots={"collapse": "lightning_modules.attention_collapse:plot_table_collapse"},
)
