"""ConvFormer fixture adapters (xianlin7/ConvFormer @ 80e1b4b): pooling, CSA, block, the SETR manifests.

All official modules here take and return 2D maps, as ours do. The official CSA's
``num_patches`` only sizes its fixed distance map; ours builds the map from the
input, so the argument is not needed (the fixtures use H = W = √num_patches).
"""
from __future__ import annotations

from torch import nn

from models.convformer_setr import SETR, convert_official_state_dict
from models.layers.convformer import (
    CNNStyleAttention,
    ConvFormerEncoder,
    ConvFormerPooling,
    official_convformer_encoder_key,
    official_csa_key,
    official_pooling_key,
)
from models.official import register_component, rename_exactly


def _run_map(module: nn.Module, inputs: dict, case: dict) -> dict:
    return {"y": module(inputs["x"])}


def _build_pooling(config: dict) -> ConvFormerPooling:
    # patch_height / patch_width are accepted and unused by the release: 3 max-pools always.
    return ConvFormerPooling(config["n_channels"], config["out_channels"], num_downsamples=3)


def _build_csa(config: dict) -> CNNStyleAttention:
    return CNNStyleAttention(config["dim"], config.get("heads", 8), config.get("dim_head", 64))


def _build_block(config: dict) -> ConvFormerEncoder:
    return ConvFormerEncoder(config["dim"], config["depth"], config["heads"], config["dim_head"],
                             config.get("mlp_dim", 1024))


def _build_setr(attention: str):
    def build(config: dict) -> SETR:
        return SETR(
            num_classes=config["n_classes"], in_channels=config["n_channels"], img_size=config["imgsize"],
            attention=attention, patch_size=config["imgsize"] // config.get("patch_num", 32),
            dim=config.get("dim", 512), depth=config.get("depth", 12), heads=config.get("heads", 8),
            dim_head=config.get("dim_head", 64), mlp_dim=config.get("mlp_dim", 2048),
            dropout=config.get("dropout", 0.1), emb_dropout=config.get("emb_dropout", 0.1),
        )
    return build


def _run_setr(module: SETR, inputs: dict, case: dict) -> dict:
    return {"logits": module(inputs["x"])}


register_component(
    "convformer/pooling", build=_build_pooling, run=_run_map,
    convert=lambda state, module: rename_exactly(state, module, official_pooling_key),
)
register_component(
    "convformer/csa", build=_build_csa, run=_run_map,
    convert=lambda state, module: rename_exactly(state, module, official_csa_key),
)
register_component(
    "convformer/block", build=_build_block, run=_run_map,
    convert=lambda state, module: rename_exactly(state, module, official_convformer_encoder_key),
)
register_component("convformer/setr", build=_build_setr("vanilla"), run=_run_setr,
                   convert=convert_official_state_dict)
register_component("convformer/setr_convformer", build=_build_setr("convformer"), run=_run_setr,
                   convert=convert_official_state_dict)
