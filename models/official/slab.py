"""SLAB fixture adapters (xinghaochen/SLAB @ f58db00): RepBN, LinearNorm, SLA (Swin and DeiT forms).

The whole-model manifests (``slab/model_*``) are adapted elsewhere (``models/official/slab_models.py``).
``slab/linear_norm`` cases are train sequences: :class:`ProgressiveNorm` runs in the release's
``per_forward`` counting, each step in its own mode, and its buffers are reported under the
release's names after every step.
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers.linear_attention import SimplifiedLinearAttention
from models.layers.repbn import ProgressiveNorm, RepBN, official_progressive_norm_key
from models.official import register_component, rename_exactly


def _identity(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(state)


def _run_tokens(module: nn.Module, inputs: dict, case: dict) -> dict:
    return {"y": module(inputs["x"])}


def _build_linear_norm(config: dict) -> ProgressiveNorm:
    for key, cls in (("norm1", "torch.nn.LayerNorm"), ("norm2", "models.prepbn.RepBN")):
        if config[key]["class"] != cls:
            raise ValueError(f"LinearNorm {key} must be {cls}, got {config[key]['class']}")
    return ProgressiveNorm(config["dim"], T=config["step"], warmup=config.get("warm", 0), schedule="linear",
                           counting="per_forward", r0=config.get("r0", 1.0),
                           ln_eps=config["norm1"].get("eps", 1e-5))


def _run_linear_norm(module: ProgressiveNorm, inputs: dict, case: dict) -> dict:
    ours = {official_progressive_norm_key(k): k for k in module.state_dict()}
    outputs = {}
    for step in case["steps"]:
        module.train(step["mode"] == "train")
        outputs[step["output"]] = module(inputs[step["input"]])
        if "lambda_used" in step and abs(float(module.last_gamma) - step["lambda_used"]) > 1e-7:
            raise AssertionError(f"step {step['output']}: gamma {float(module.last_gamma)}, "
                                 f"official {step['lambda_used']}")
        state = module.state_dict()
        for name in step.get("buffers_after", []):
            _, official = name.split(".", 1)
            outputs[name] = state[ours[official]].clone()
    return outputs


def _build_sla(config: dict) -> SimplifiedLinearAttention:
    return SimplifiedLinearAttention(config["dim"], config["num_heads"], tuple(config["window_size"]),
                                     qkv_bias=config.get("qkv_bias", True), attn_drop=config.get("attn_drop", 0.0),
                                     proj_drop=config.get("proj_drop", 0.0), kernel_size=config.get("kernel_size", 5))


def _build_sla_deit(config: dict) -> SimplifiedLinearAttention:
    # The release fixes the DeiT form to 14×14 patch tokens (positional term (1, 196, C)) and kernel 5.
    return SimplifiedLinearAttention(config["dim"], config["num_heads"], (14, 14),
                                     qkv_bias=config.get("qkv_bias", False), attn_drop=config.get("attn_drop", 0.1),
                                     proj_drop=config.get("proj_drop", 0.1), kernel_size=5)


register_component("slab/repbn", build=lambda config: RepBN(config["channels"]), convert=_identity,
                   run=_run_tokens)
register_component("slab/linear_norm", build=_build_linear_norm, run=_run_linear_norm,
                   convert=lambda state, module: rename_exactly(state, module, official_progressive_norm_key))
register_component("slab/sla", build=_build_sla, convert=_identity, run=_run_tokens)
register_component("slab/sla_deit", build=_build_sla_deit, convert=_identity, run=_run_tokens)
