"""GLARE fixture adapters (LowLevelAI/GLARE @ 7ea5027): the vector quantiser, the VQGAN and the Stage-III decoder.

* ``glare/vector_quantizer`` (``quantize.py: VectorQuantizer2``, forward cases) →
  :class:`models.layers.vector_quantizer.VectorQuantizer`; outputs ``z_q``, ``loss``, ``indices``.
* ``glare/vqgan`` (``VQModel_arch.py: VQModel``, manifest) → :class:`models.glare_vqgan.GlareVQGAN`.
* ``glare/stage3_decoder`` (``deformableDecoder_arch.py: MultiScaleDecoder2``, manifest) →
  :class:`models.glare_decoder.MultiScaleDecoder`.

The two whole modules have manifests only (the release's Stage-III forward needs CUDA and a compiled
DCN extension); their runners name the inputs a forward case would need.
"""
from __future__ import annotations

import torch
from torch import nn

from models.glare_decoder import MultiScaleDecoder
from models.glare_decoder import convert_official_state_dict as convert_decoder
from models.glare_vqgan import GlareVQGAN
from models.glare_vqgan import convert_official_state_dict as convert_vqgan
from models.layers.vector_quantizer import VectorQuantizer
from models.official import register_component


def _expect(config: dict, **values) -> None:
    for key, value in values.items():
        if key in config and config[key] != value:
            raise ValueError(f"official config {key}={config[key]!r}, this adapter builds {value!r}")


def _identity(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(state)


def _build_quantizer(config: dict) -> VectorQuantizer:
    _expect(config, remap=None)
    return VectorQuantizer(config["n_e"], config["e_dim"], beta=config["beta"], legacy=config.get("legacy", False),
                           sane_index_shape=config.get("sane_index_shape", False))


def _run_quantizer(module: VectorQuantizer, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    z_q, loss, (_, _, indices) = module(inputs["z"])
    return {"z_q": z_q, "loss": loss, "indices": indices}


def _build_vqgan(config: dict) -> GlareVQGAN:
    _expect(config, double_z=False, remap=None, colorize_nlabels=None, sane_index_shape=False)
    keys = ("resolution", "n_embed", "embed_dim", "z_channels", "in_channels", "out_ch", "ch", "num_res_blocks",
            "dropout")
    return GlareVQGAN(**{k: config[k] for k in keys if k in config}, ch_mult=tuple(config["ch_mult"]),
                      attn_resolutions=tuple(config["attn_resolutions"]))


def _run_vqgan(module: GlareVQGAN, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    latent = module.encode(inputs["x"])
    image, emb_loss, (v1, v0) = module.decode(latent)
    return {"latent": latent, "image": image, "emb_loss": emb_loss, "v1": v1, "v0": v0}


def _build_decoder(config: dict) -> MultiScaleDecoder:
    keys = ("ch", "out_ch", "num_res_blocks", "dropout", "resamp_with_conv", "resolution", "z_channels")
    return MultiScaleDecoder(**{k: config[k] for k in keys if k in config}, ch_mult=tuple(config["ch_mult"]),
                             attn_resolutions=tuple(config["attn_resolutions"]))


def _run_decoder(module: MultiScaleDecoder, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    # the release's argument order: code_decoder_output coarse → fine, enc_feat (mid_feat) fine → coarse
    out = module(inputs["z"], [inputs["code_decoder_output_0"], inputs["code_decoder_output_1"]],
                 [inputs["enc_feat_0"], inputs["enc_feat_1"]])
    return {"y": out}


register_component("glare/vector_quantizer", build=_build_quantizer, convert=_identity, run=_run_quantizer)
register_component("glare/vqgan", build=_build_vqgan, convert=convert_vqgan, run=_run_vqgan)
register_component("glare/stage3_decoder", build=_build_decoder, convert=convert_decoder, run=_run_decoder)
