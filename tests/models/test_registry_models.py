"""Every registered test model: shape, gradient and registry behaviour (one loop for all papers)."""
from __future__ import annotations

import pytest
import torch

from lightning_modules.grad_layout import align_gradient_strides
from models import create_model, list_models, model_info, register_model

TEST_MODELS = list_models("*_test")


def _inputs(model, info, batch_size):
    """One ``input_size`` tensor, or ``model.example_inputs(batch_size, input_size)`` for a model taking several."""
    if hasattr(model, "example_inputs"):
        return tuple(model.example_inputs(batch_size, info.input_size))
    return (torch.randn(batch_size, *info.input_size, requires_grad=True),)


def _scalar(out):
    """A tensor's mean, or the sum over a (nested) tuple of outputs such as ``(image, loss)``."""
    if isinstance(out, tuple | list):
        return sum(_scalar(o) for o in out)
    return out.float().mean()


def test_every_paper_model_has_a_test_variant():
    papers = {model_info(n).paper for n in list_models()}
    test_papers = {model_info(n).paper for n in TEST_MODELS}
    assert papers == test_papers


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_shape_and_backward(name):
    info = model_info(name)
    model = create_model(name)
    align_gradient_strides(model)  # as the task modules do before DDP wraps them
    inputs = _inputs(model, info, 2)
    out = model(*inputs)
    if info.task == "segmentation":
        assert out.shape[0] == 2 and out.shape[2:] == inputs[0].shape[2:]
    _scalar(out).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter must receive a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    # DDP's gradient buckets take each parameter's strides and warn when a gradient comes otherwise
    # (lightning_modules/grad_layout.py): every gradient must arrive with its parameter's strides.
    mismatched = [(n, p.stride(), p.grad.stride()) for n, p in model.named_parameters()
                  if p.grad is not None and p.grad.stride() != p.stride()]
    assert not mismatched, f"gradients with other strides than their parameters: {mismatched[:3]}"


@pytest.mark.parametrize("name", TEST_MODELS)
def test_eval_forward_is_deterministic(name):
    model = create_model(name).eval()
    inputs = _inputs(model, model_info(name), 1)
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), model(*inputs))


def test_registry_errors_and_filters():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")
    assert "cswin_unet" in list_models(include_test=False)
    assert all(not n.endswith("_test") for n in list_models(include_test=False))
    assert list_models(paper="cswin_unet") == ["cswin_unet", "cswin_unet_test"]
    with pytest.raises(ValueError, match="already registered"):
        register_model(input_size=(1,), paper="x", name="cswin_unet")(lambda: None)
