"""ConvFormer Table 1, ACDC columns: each backbone × the five attention types.

    python reproduce/table1_convformer_acdc.py [--quick | --data-dir /data/ACDC] [--only setr_convformer]
"""
from __future__ import annotations

from ablations.convformer.common import ATTENTIONS, BACKBONES, backbone_variant, convformer_table

TABLE = convformer_table(
    1, "attention_acdc", "Anti-collapse attention types on three backbones", "acdc",
    tuple(backbone_variant(b, a, in_channels=1) for b in BACKBONES for a in ATTENTIONS),
    script="table1_convformer_acdc",
    notes=("Paper text: with ConvFormer, SETR's Dice rises on average by 3.86 and Patcher's by 0.66 on ACDC; "
           "ConvFormer helps pure transformers more than hybrids. TransUNet and Patcher are reconstructed.",
           "TransFuse and FAT-Net (the paper's other two backbones) are not built; ICH is in-house data."),
    plots={"collapse": "lightning_modules.attention_collapse:plot_table_collapse"},
)
