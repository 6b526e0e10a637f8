"""SLAB whole-model manifests (xinghaochen/SLAB @ f58db00): ``slab/model_*`` → the networks of :mod:`models.slab`.

Each manifest's ``config`` is the official constructor's; the builder checks the structural
values we rely on (widths, depths, heads, windows, attention pattern, norm) and builds our
registered model of the release's name with the manifest's classes and drop-path rate. Names go
through :func:`models.slab.convert_official_state_dict`. PVT manifests are not covered.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.official import register_component
from models.registry import create_model
from models.slab import convert_official_state_dict


def _expect(config: dict, **values) -> None:
    for key, value in values.items():
        got = config.get(key)
        if (list(got) if isinstance(got, tuple | list) else got) != value:
            raise ValueError(f"official config {key}={got!r}, this adapter builds {value!r}")


def _norm_is(config: dict, text: str) -> None:
    if config["norm_layer"] != text:
        raise ValueError(f"official norm_layer {config['norm_layer']!r}, this adapter builds {text!r}")


_PREPBN_DEIT = "partial(LinearNorm, norm1=partial(LayerNorm, eps=1e-06), norm2=RepBN{})"
_PREPBN = "partial(LinearNorm, norm1=LayerNorm, norm2=RepBN, step={})"

#: Per release name: the check of the official config (structure and norm) before building ours.
_MODELS: dict[str, Callable[[dict], object]] = {
    "deit_t_prepbn": (lambda c: (_expect(c, embed_dim=192, depth=12, num_heads=3), _norm_is(c, "RepBN"))),
    "deit_s_prepbn": (lambda c: (_expect(c, embed_dim=384, depth=12, num_heads=6),
                                 _norm_is(c, _PREPBN_DEIT.format("")))),
    "slab_deit_t": (lambda c: (_expect(c, embed_dim=192, depth=12, num_heads=3),
                               _norm_is(c, _PREPBN_DEIT.format(", step=60000")))),
    "slab_deit_s": (lambda c: (_expect(c, embed_dim=384, depth=12, num_heads=6),
                               _norm_is(c, _PREPBN_DEIT.format(", step=60000")))),
    "swin_t_prepbn": (lambda c: (_expect(c, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                         window_size=7), _norm_is(c, "RepBN"))),
    "slab_swin_t": (lambda c: (_expect(c, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                       window_size=56, attn_type="LLSS"), _norm_is(c, _PREPBN.format(60000)))),
    "slab_swin_s": (lambda c: (_expect(c, embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                                       window_size=56, attn_type="LLSS"), _norm_is(c, _PREPBN.format(60000)))),
    "slab_cswin_t": (lambda c: (_expect(c, embed_dim=64, depth=[2, 4, 18, 1], split_size=[1, 2, 7, 7],
                                        num_heads=[2, 4, 8, 16], la_split_size="56-28-14-7", attn_type="LLSS"),
                                _norm_is(c, _PREPBN.format(120000)))),
}


def _builder(name: str) -> Callable[[dict], nn.Module]:
    check = _MODELS[name]

    def build(config: dict) -> nn.Module:
        check(config)
        _expect(config, img_size=224)
        return create_model(name, num_classes=config["num_classes"],
                                         drop_path_rate=config["drop_path_rate"])
    return build


def _run(module: nn.Module, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    return {"logits": module(inputs["x"])}


for _name in _MODELS:
    register_component(f"slab/model_{_name}", build=_builder(_name), convert=convert_official_state_dict, run=_run)
