"""The compile switch: which parts of a network are compiled, and only once."""
from __future__ import annotations

import pytest
from torch import nn

from lightning_modules.compile_switch import compile_network, compile_parts
from models.glare import glare_test


class TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def compile_parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}


def compiled(module: nn.Module) -> bool:
    return module._compiled_call_impl is not None  # what nn.Module.compile sets


def test_a_plain_network_is_compiled_whole_and_once():
    task, net = nn.Module(), nn.Linear(2, 2)
    assert compile_network(task, net) == [""] and compiled(net)
    assert compile_network(task, net) == []  # configure_model may run again (e.g. a second fit)


def test_compile_parts_names_what_is_compiled():
    net = TwoParts()
    assert compile_network(nn.Module(), net) == ["encoder", "decoder"]
    assert compiled(net.encoder) and compiled(net.decoder) and not compiled(net.head) and not compiled(net)


def test_glare_compiles_the_parts_its_stages_call():
    net = glare_test()
    assert set(compile_parts(net)) == {"stage2.cond_encoder", "stage2.flow", "deformable_decoder", "vqgan.encoder",
                                       "vqgan.decoder"}
    state = set(net.state_dict())
    compile_network(nn.Module(), net)
    assert set(net.state_dict()) == state  # in place: checkpoints keep their keys


def test_a_part_that_is_not_a_module_is_an_error():
    class Bad(nn.Module):
        def compile_parts(self):
            return {"x": 3}

    with pytest.raises(TypeError, match=r"compile_parts\(\)\['x'\] is a int"):
        compile_parts(Bad())
