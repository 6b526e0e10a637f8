"""Blocks shared by the papers' models, each written once."""
from models.layers.carafe import CARAFE
from models.layers.cswin_attention import CrossShapedWindowAttention, CSWinBlock, StripeAttention
from models.layers.drop_path import DropPath, drop_path, drop_path_schedule
from models.layers.mlp import Mlp
from models.layers.upsample import BilinearUpsample, TransposedConvUpsample, build_upsampler

__all__ = [
    "CARAFE",
    "BilinearUpsample",
    "CSWinBlock",
    "CrossShapedWindowAttention",
    "DropPath",
    "Mlp",
    "StripeAttention",
    "TransposedConvUpsample",
    "build_upsampler",
    "drop_path",
    "drop_path_schedule",
]
