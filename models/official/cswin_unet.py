"""CSWin-UNet fixture adapters (eatbeanss/CSWin-UNet @ 4e47abe): block, CARAFE, whole model.

The official block and CARAFE take token sequences (B, H·W, C) of square maps;
ours take maps, so the runners reshape.
"""
from __future__ import annotations

import math

import torch

from models.cswin_unet import CSWinUNet, convert_official_state_dict, official_block_key, official_carafe_key
from models.layers import CARAFE, CSWinBlock
from models.official import register_component, rename_exactly


def _tokens_to_map(x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"official token input must be a square map, got N={n}")
    return x.reshape(b, side, side, c)


def _build_block(config: dict) -> CSWinBlock:
    return CSWinBlock(
        dim=config["dim"], num_heads=config["num_heads"], split_size=config["split_size"],
        mlp_ratio=config.get("mlp_ratio", 4.0), qkv_bias=config.get("qkv_bias", True),
        qk_scale=config.get("qk_scale"), drop=config.get("drop", 0.0), attn_drop=config.get("attn_drop", 0.0),
        drop_path=config.get("drop_path", 0.0),
        full_attention=bool(config.get("last_stage", False)) or config["reso"] == config["split_size"],
    )


def _run_block(module: CSWinBlock, inputs: dict, case: dict) -> dict:
    x = _tokens_to_map(inputs["x"])
    return {"y": module(x).flatten(1, 2)}


def _build_carafe(config: dict) -> CARAFE:
    return CARAFE(config["dim"], config.get("dim_out") or config["dim"], scale=config.get("up_factor", 2),
                  up_kernel=config.get("kernel_size", 3), encoder_kernel=3)


def _run_carafe(module: CARAFE, inputs: dict, case: dict) -> dict:
    x = _tokens_to_map(inputs["x"]).permute(0, 3, 1, 2)
    return {"y": module(x).flatten(2).transpose(1, 2)}


def _build_model(config: dict) -> CSWinUNet:
    return CSWinUNet(
        num_classes=config["num_classes"], img_size=config["img_size"], in_chans=config.get("in_chans", 3),
        embed_dim=config["embed_dim"], depths=tuple(config["depth"]), split_size=tuple(config["split_size"]),
        num_heads=tuple(config["num_heads"]), mlp_ratio=config.get("mlp_ratio", 4.0),
        qkv_bias=config.get("qkv_bias", True), qk_scale=config.get("qk_scale"),
        drop_rate=config.get("drop_rate", 0.0), drop_path_rate=config.get("drop_path_rate", 0.0),
    )


def _run_model(module: CSWinUNet, inputs: dict, case: dict) -> dict:
    return {"logits": module(inputs["x"])}


register_component(
    "cswin_unet/cswin_block", build=_build_block, run=_run_block,
    convert=lambda state, module: rename_exactly(state, module, official_block_key),
)
register_component(
    "cswin_unet/carafe", build=_build_carafe, run=_run_carafe,
    convert=lambda state, module: rename_exactly(state, module, official_carafe_key),
)
register_component("cswin_unet/model", build=_build_model, run=_run_model, convert=convert_official_state_dict)
