"""The TransUNet Synapse release's on-disk layout: folder, list and suffix names, classes.

Shared by the loader (:mod:`datamodules.synapse`) and the synthetic writer
(:mod:`datamodules.synthetic`), which must agree on it.
"""
from __future__ import annotations

SYNAPSE_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aorta",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)
SYNAPSE_ENV_VAR = "SYNAPSE_DATA_DIR"
TRAIN_DIR = "train_npz"
TEST_DIR = "test_vol_h5"
LIST_DIR = "lists_Synapse"
TRAIN_LIST = "train.txt"
TEST_LIST = "test_vol.txt"
NPZ_SUFFIX = ".npz"
H5_SUFFIX = ".npy.h5"
