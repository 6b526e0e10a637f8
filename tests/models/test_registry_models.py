"""Every registered test model: shape, gradient and registry behaviour (one loop for all papers)."""
from __future__ import annotations

import pytest
import torch

from models import create_model, list_models, model_info, register_model

TEST_MODELS = list_models("*_test")


def test_every_paper_model_has_a_test_variant():
    papers = {model_info(n).paper for n in list_models()}
    test_papers = {model_info(n).paper for n in TEST_MODELS}
    assert papers == test_papers


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_shape_and_backward(name):
    info = model_info(name)
    model = create_model(name)
    x = torch.randn(2, *info.input_size, requires_grad=True)
    out = model(x)
    if info.task == "segmentation":
        assert out.shape[0] == 2 and out.shape[2:] == x.shape[2:]
    out.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter must receive a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_eval_forward_is_deterministic(name):
    model = create_model(name).eval()
    x = torch.randn(1, *model_info(name).input_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_registry_errors_and_filters():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")
    assert "cswin_unet" in list_models(include_test=False)
    assert all(not n.endswith("_test") for n in list_models(include_test=False))
    assert list_models(paper="cswin_unet") == ["cswin_unet", "cswin_unet_test"]
    with pytest.raises(ValueError, match="already registered"):
        register_model(input_size=(1,), paper="x", name="cswin_unet")(lambda: None)
