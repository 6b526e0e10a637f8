"""GLARE Stage-II fixture adapters (LowLevelAI/GLARE @ 7ea5027): ``glare/flow_step``, ``glare/flow``,
``glare/cond_encoder``, ``glare/stage2`` → :mod:`models.layers.flow` and :mod:`models.glare_flow`.

The flow cases are eval forwards run both ways from ``logdet = 0``: ``(z, logdet)`` of the normalising
direction on ``z``/``gt`` and ``(x_rev, logdet_rev)`` of the reverse on ``z_rev``. Their ActNorm
parameters are non-zero, so the data-dependent initialisation never runs (it is train-mode only anyway).
``glare/cond_encoder`` and ``glare/stage2`` have manifests only (names, shapes, counts); their runners
return the outputs a case would name after the release (``cond_feat``, ``color_map``, ``x_rev``).
Names go through :func:`models.glare_flow.convert_official_state_dict`.
"""
from __future__ import annotations

import torch
from torch import nn

from models.glare_flow import ConditionalEncoder, GlareStage2, LatentFlow, convert_official_state_dict
from models.layers.flow import FlowStep
from models.official import register_component

_RELEASED_OPT = "confs/train_stage2_LOL.yml"
#: The released Stage-II options the builders rely on (``network_G.flow.*``; conditioning 64 ch, hidden 64).
_RELEASED_FLOW = {"network_G.flow.L": 2, "network_G.flow.additionalFlowNoAffine": 2,
                  "network_G.flow.split.enable": False, "le_curve": False}
_COUPLINGS = {"CondAffineSeparatedAndCond": True, "noCoupling": False}


def _flow_options(config: dict) -> dict:
    if config.get("opt") != _RELEASED_OPT:
        raise ValueError(f"options {config.get('opt')!r}: this adapter knows {_RELEASED_OPT!r} only")
    options = {**_RELEASED_FLOW, **config.get("opt_effective", {})}
    if options["network_G.flow.split.enable"] or options.get("le_curve"):
        raise ValueError("split / le_curve flows are not built (GLARE's release disables both)")
    return options


def _expect(config: dict, **values) -> None:
    for key, value in values.items():
        if config.get(key) != value:
            raise ValueError(f"official config {key}={config.get(key)!r}, this adapter builds {value!r}")


def _build_step(config: dict) -> FlowStep:
    _flow_options(config)
    _expect(config, flow_permutation="invconv", LU_decomposed=False)
    return FlowStep(config["in_channels"], 64, config["hidden_channels"], coupling=_COUPLINGS[config["flow_coupling"]],
                    actnorm_scale=config["actnorm_scale"])


def _build_flow(config: dict) -> LatentFlow:
    options = _flow_options(config)
    _expect(config, flow_coupling="CondAffineSeparatedAndCond", LU_decomposed=False)
    return LatentFlow(config["image_shape"][2], 64, config["hidden_channels"], config["K"],
                      options["network_G.flow.L"], options["network_G.flow.additionalFlowNoAffine"],
                      config["actnorm_scale"], keep_unused_head=True)


def _build_cond_encoder(config: dict) -> ConditionalEncoder:
    _expect(config, double_z=False)
    return ConditionalEncoder(config["ch"], config["ch_mult"], config["num_res_blocks"], config["attn_resolutions"],
                              config["dropout"], config["in_channels"], config["resolution"], config["z_channels"])


def _build_stage2(config: dict) -> GlareStage2:
    options = _flow_options(config)
    _expect(options, **{"cond_encoder": "ConEncoder1", "network_G.flow.coupling": "CondAffineSeparatedAndCond",
                        "network_G.flow.noInitialInj": True, "encode_color_map": False, "to_yuv": False})
    # E_c is ConEncoder1(opt=opt): every architectural argument at its default (= our defaults)
    return GlareStage2(K=config["K"], L=options["network_G.flow.L"],
                       n_additional=options["network_G.flow.additionalFlowNoAffine"], keep_unused_head=True)


def _run_flow(module: nn.Module, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    x = inputs["gt"] if "gt" in inputs else inputs["z"]
    cond = inputs.get("cond")
    z, logdet = module(x, cond, x.new_zeros(x.shape[0]))
    x_rev, logdet_rev = module.inverse(inputs["z_rev"], cond, x.new_zeros(x.shape[0]))
    return {"z": z, "logdet": logdet, "x_rev": x_rev, "logdet_rev": logdet_rev}


def _run_cond_encoder(module: ConditionalEncoder, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    out = module(inputs["x"])
    return {"cond_feat": out.cond_feat, "color_map": out.color_map,
            **{f"mid_feat_{i}": f for i, f in enumerate(out.mid_feats)}}


def _run_stage2(module: GlareStage2, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    return {"x_rev": module.enhance_latent(inputs["lr"])}


register_component("glare/flow_step", build=_build_step, convert=convert_official_state_dict, run=_run_flow)
register_component("glare/flow", build=_build_flow, convert=convert_official_state_dict, run=_run_flow)
register_component("glare/cond_encoder", build=_build_cond_encoder, convert=convert_official_state_dict,
                   run=_run_cond_encoder)
register_component("glare/stage2", build=_build_stage2, convert=convert_official_state_dict, run=_run_stage2)
