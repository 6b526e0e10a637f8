"""Datamodules reading each dataset's published on-disk format, and synthetic stand-ins."""
from .errors import DatasetError
from .synapse import SYNAPSE_CLASS_NAMES, SynapseDataModule
from .synthetic import (
    SyntheticSynapseDataModule,
    default_cache_dir,
    ensure_synthetic_synapse,
    write_synthetic_synapse,
)

__all__ = [
    "DatasetError",
    "SYNAPSE_CLASS_NAMES",
    "SynapseDataModule",
    "SyntheticSynapseDataModule",
    "default_cache_dir",
    "ensure_synthetic_synapse",
    "write_synthetic_synapse",
]
