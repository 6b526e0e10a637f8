"""GLARE whole-generator adapter (LowLevelAI/GLARE @ 7ea5027): ``glare/stage3`` → :class:`models.glare.GLARE`.

``glare/stage3`` is the release's Stage-III ``netG`` (``VQLLFLOWDeformable_arch.py: VQLLFLOWDeformable``):
E_c (``RRDB.*``) + flow (``flowUpsamplerNet.*``) + MFD (``deformable_decoder.*``) = 71,715,259 parameters,
**without** the VQGAN, which the release keeps in its own file. It has a manifest only (the release's
forward needs CUDA and the compiled DCN extension), so the builder makes that form, ``GLARE(include_vqgan=False)``,
from the options the manifest records; names go through :func:`models.glare.convert_official_state_dict`.
A netG alone cannot enhance an image: the runner raises for a model without its VQGAN.
"""
from __future__ import annotations

import torch

from models.glare import GLARE, convert_official_state_dict
from models.official import register_component

_RELEASED_OPT = "confs/train_stage3_LOL.yml"
#: Options the builder relies on, as ``opt_effective`` records them (flow: 2 levels, 2 no-coupling steps each).
_RELEASED = {"model": "VQLLFLOWD", "cond_encoder": "ConEncoder1", "network_G.which_model_G": "VQLLFLOWDeformable",
             "network_G.flow.coupling": "CondAffineSeparatedAndCond", "network_G.flow.noInitialInj": True,
             "network_G.flow.split.enable": False, "encode_color_map": False, "to_yuv": False}
#: The VQGAN ddconfig whose architecture E_c and the MFD share (their constructors' defaults in the release).
_ARCH = {"ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [64], "resolution": 256,
         "z_channels": 3, "embed_dim": 3, "n_embed": 8192}


def _expect(config: dict, **values) -> None:
    for key, value in values.items():
        got = config.get(key)
        if (list(got) if isinstance(got, tuple) else got) != value:
            raise ValueError(f"official option {key}={got!r}, this adapter builds {value!r}")


def _build_stage3(config: dict) -> GLARE:
    if config.get("opt") != _RELEASED_OPT:
        raise ValueError(f"options {config.get('opt')!r}: this adapter knows {_RELEASED_OPT!r} only")
    options = config["opt_effective"]
    _expect(options, **_RELEASED)
    _expect(options["network_VQGAN"], **_ARCH)
    if list(config.get("fix_modules", [])) != ["RRDB", "flowUpsamplerNet"]:
        raise ValueError(f"fix_modules={config.get('fix_modules')!r}: the release freezes RRDB and flowUpsamplerNet")
    return GLARE(K=options["network_G.flow.K"], L=options["network_G.flow.L"],
                 n_additional=options["network_G.flow.additionalFlowNoAffine"], include_vqgan=False,
                 trainable_stage=3)


def _convert(state: dict[str, torch.Tensor], module: GLARE) -> dict[str, torch.Tensor]:
    return convert_official_state_dict(state, module)


def _run_stage3(module: GLARE, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    # a forward case would give the release's ``lr`` input; ``stage3_outputs`` says why a netG alone cannot run
    return {"y": module.stage3_outputs(inputs["lr"]).image}


register_component("glare/stage3", build=_build_stage3, convert=_convert, run=_run_stage3)
