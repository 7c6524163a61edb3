"""Properties every registered model must have; parametrised over ``list_models()``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from torch import nn

from torchslim.models import create, list_models, model_input_shape

MODELS = list_models()


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _batch(model: nn.Module, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *model.input_shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [10, 7])
def test_forward_gives_one_logit_per_class(name, num_classes):
    model = create(name, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(_batch(model))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_forward_and_backward(name):
    model = create(name, width_mult=0.25).train()
    out = model(_batch(model))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_fx_trace_gives_identical_outputs(name):
    model = create(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = _batch(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_half_width_has_fewer_params(name):
    assert _params(create(name, width_mult=0.5)) < _params(create(name))


@pytest.mark.parametrize("name", MODELS)
def test_other_in_channels(name):
    """Grey inputs for RGB nets (in_channels=1), RGB inputs for grey ones."""
    in_channels = 1 if model_input_shape(name)[0] == 3 else 3
    model = create(name, in_channels=in_channels, width_mult=0.5).eval()
    assert model.input_shape == (in_channels, *model_input_shape(name)[1:])
    with torch.no_grad():
        assert model(_batch(model)).shape == (2, 10)


@pytest.mark.parametrize("name", MODELS)
def test_arch_round_trip_rebuilds_same_shapes(name):
    model = create(name, num_classes=7, in_channels=1, width_mult=0.5)
    arch = json.loads(json.dumps(model.torchslim_arch))
    assert arch["name"] == name
    rebuilt = create(arch["name"], **arch["kwargs"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes
    assert rebuilt.input_shape == model.input_shape
    assert rebuilt.torchslim_arch == arch


@pytest.mark.parametrize("name", MODELS)
def test_every_conv_feeds_exactly_one_batchnorm(name):
    model = create(name, width_mult=0.25)
    graph_module = torch.fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    convs = [n for n in graph_module.graph.nodes
             if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    for node in convs:
        users = list(node.users)
        assert len(users) == 1, f"{node.target} has users {users}"
        user = users[0]
        assert user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d), (
            f"{node.target} is followed by {user.target}")
        assert modules[user.target].num_features == modules[node.target].out_channels


@pytest.mark.parametrize("name", MODELS)
def test_each_module_is_called_once_and_activations_are_not_inplace(name):
    model = create(name, width_mult=0.25)
    graph = torch.fx.symbolic_trace(model).graph
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    assert len(targets) == len(set(targets)), "a module object is used in two places"
    for module in model.modules():
        assert not getattr(module, "inplace", False), f"{module} is inplace"


@pytest.mark.parametrize("name", MODELS)
def test_weight_initialisation(name):
    torch.manual_seed(0)
    model = create(name)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        elif isinstance(module, nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            if module.weight.numel() >= 5000:
                assert module.weight.std().item() == pytest.approx(0.01, rel=0.15)
        elif isinstance(module, nn.Conv2d) and module.weight.numel() >= 5000:
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            expected = (2.0 / fan_out) ** 0.5  # kaiming normal, mode fan_out, relu gain
            assert module.weight.std().item() == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_gives_identical_weights(name):
    torch.manual_seed(123)
    first = create(name, width_mult=0.25).state_dict()
    torch.manual_seed(123)
    second = create(name, width_mult=0.25).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(124)
    third = create(name, width_mult=0.25).state_dict()
    assert any(not torch.equal(first[k], third[k]) for k in first)
