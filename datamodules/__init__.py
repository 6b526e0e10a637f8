"""Datamodules reading each dataset's published on-disk format, and synthetic stand-ins in the same formats.

A datamodule that can write its own synthetic stand-in takes it as an option
(``SynapseDataModule(synthetic=SyntheticSynapse(size=64))``), not as a subclass.
"""
from .checks import DataCheckError
from .errors import DatasetError
from .synapse import SynapseDataModule
from .synapse_layout import SYNAPSE_CLASS_NAMES
from .synthetic import SyntheticSynapse, default_cache_dir, ensure_synthetic_synapse, write_synthetic_synapse

__all__ = [
    "DataCheckError",
    "DatasetError",
    "SYNAPSE_CLASS_NAMES",
    "SynapseDataModule",
    "SyntheticSynapse",
    "default_cache_dir",
    "ensure_synthetic_synapse",
    "write_synthetic_synapse",
]

from .convformer_png import ConvFormerPNGDataModule  # noqa: E402
from .png_layout import PRESETS as CONVFORMER_PNG_PRESETS  # noqa: E402
from .synthetic_png import SyntheticPNG, ensure_synthetic_png, write_synthetic_png  # noqa: E402

__all__ += [
    "CONVFORMER_PNG_PRESETS",
    "ConvFormerPNGDataModule",
    "SyntheticPNG",
    "ensure_synthetic_png",
    "write_synthetic_png",
]

from .imagenet import ImageNetDataModule  # noqa: E402
from .synthetic_folders import SyntheticFolders, ensure_synthetic_folders, write_synthetic_folders  # noqa: E402

__all__ += [
    "ImageNetDataModule",
    "SyntheticFolders",
    "ensure_synthetic_folders",
    "write_synthetic_folders",
]

from .lol import LowLightPairsDataModule  # noqa: E402
from .lol_layout import LAYOUTS as LOW_LIGHT_LAYOUTS  # noqa: E402
from .synthetic_lol import SyntheticLowLight, ensure_synthetic_lol, write_synthetic_lol  # noqa: E402

__all__ += [
    "LOW_LIGHT_LAYOUTS",
    "LowLightPairsDataModule",
    "SyntheticLowLight",
    "ensure_synthetic_lol",
    "write_synthetic_lol",
]
