"""Blocks shared by the papers' models, each written once.

``Mlp``, ``DropPath``, ``drop_path`` and ``trunc_normal_`` are timm's (``timm.layers``):
the CSWin code that CSWin-UNet's release builds on takes DropPath and trunc_normal_
from timm (a listed requirement), and its own Mlp computes exactly timm's Mlp
(fc1 → GELU → Dropout → fc2 → Dropout; timm's extra ``norm`` is a parameter-free
Identity). Paper files import them from here.
"""
from timm.layers import DropPath, Mlp, drop_path, trunc_normal_

from models.layers.carafe import CARAFE
from models.layers.cswin_attention import CrossShapedWindowAttention, CSWinBlock, StripeAttention
from models.layers.drop_path import drop_path_schedule
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
    "trunc_normal_",
]

# ConvFormer (models/layers/convformer.py, models/layers/vit_variants.py)
from models.layers.convformer import (  # noqa: E402
    CNNStyleAttention,
    ConvFeedForward,
    ConvFormerBlock,
    ConvFormerEncoder,
    ConvFormerPooling,
)
from models.layers.vit_variants import ATTENTION_TYPES, TokenAttention, TransformerEncoder  # noqa: E402

__all__ += [
    "ATTENTION_TYPES",
    "CNNStyleAttention",
    "ConvFeedForward",
    "ConvFormerBlock",
    "ConvFormerEncoder",
    "ConvFormerPooling",
    "TokenAttention",
    "TransformerEncoder",
]

# SLAB (models/layers/repbn.py, models/layers/linear_attention.py)
from models.layers.linear_attention import SimplifiedLinearAttention  # noqa: E402
from models.layers.reparam import (  # noqa: E402
    fold_repbn_after_linear,
    fold_repbn_into_conv,
    fold_repbn_into_linear,
    fold_repbn_into_residual_stream,
    repbn_affine,
)
from models.layers.repbn import ProgressiveNorm, RepBN  # noqa: E402

__all__ += [
    "ProgressiveNorm",
    "RepBN",
    "SimplifiedLinearAttention",
    "fold_repbn_after_linear",
    "fold_repbn_into_conv",
    "fold_repbn_into_linear",
    "fold_repbn_into_residual_stream",
    "repbn_affine",
]

# GLARE flow layers (models/layers/flow.py)
from models.layers.flow import (  # noqa: E402
    ActNorm2d,
    ConditionalAffineCoupling,
    FeatureAffine,
    FlowStep,
    InvertibleConv1x1,
    SelfConditionalAffine,
)

__all__ += [
    "ActNorm2d",
    "ConditionalAffineCoupling",
    "FeatureAffine",
    "FlowStep",
    "InvertibleConv1x1",
    "SelfConditionalAffine",
]

# GLARE autoencoder (models/layers/vqgan_blocks.py, models/layers/vector_quantizer.py, models/layers/deformable.py)
from models.layers.deformable import ModulatedDeformConv2d  # noqa: E402
from models.layers.vector_quantizer import VectorQuantizer  # noqa: E402
from models.layers.vqgan_blocks import AttnBlock, ResnetBlock, VQGANDecoder, VQGANEncoder  # noqa: E402

__all__ += ["AttnBlock", "ModulatedDeformConv2d", "ResnetBlock", "VQGANDecoder", "VQGANEncoder", "VectorQuantizer"]
