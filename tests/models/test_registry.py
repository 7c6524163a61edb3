"""The model registry: names, argument checks, input shapes and the architecture record."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from torchslim.errors import UserError
from torchslim.models import create, list_models, model_input_shape, register_model
from torchslim.models import registry

EXPECTED = {"alexnet", "lenet300", "lenet5", "lenet5-caffe", "mobilenetv2", "resnet18", "resnet20", "resnet56",
            "shufflenetv2", "vgg11", "vgg14", "vgg16"}


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


def test_default_input_shapes():
    assert model_input_shape("lenet5") == (1, 28, 28)
    assert model_input_shape("lenet300") == (1, 28, 28)
    assert model_input_shape("lenet5-caffe") == (1, 28, 28)
    for name in EXPECTED - {"lenet5", "lenet5-caffe", "lenet300"}:
        assert model_input_shape(name) == (3, 32, 32)
        assert create(name, width_mult=0.25).input_shape == (3, 32, 32)


def test_unknown_name_lists_the_choices():
    with pytest.raises(UserError) as info:
        create("vgg15")
    message = str(info.value)
    assert "'vgg15'" in message
    assert all(name in message for name in list_models())
    with pytest.raises(UserError, match="resnet20"):
        model_input_shape("resnet21")


@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf, "1.0", True])
def test_bad_width_mult_is_a_user_error(bad):
    with pytest.raises(UserError, match="width_mult"):
        create("resnet20", width_mult=bad)


@pytest.mark.parametrize("key, bad", [("num_classes", 0), ("num_classes", 2.5),
                                      ("in_channels", 0), ("input_size", (32,)),
                                      ("input_size", (0, 32)), ("input_size", "32x32")])
def test_bad_arguments_are_user_errors(key, bad):
    with pytest.raises(UserError, match=key):
        create("resnet20", **{key: bad})


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="vgg14.*takes no option 'depth'"):
        create("vgg14", depth=3)


def test_integer_like_arguments_are_accepted():
    size = torch.Size([1, 28, 28])
    model = create("lenet5", num_classes=torch.tensor(7).item(), in_channels=size[0],
                   width_mult=1, input_size=size[1:])
    assert model.torchslim_arch["kwargs"] == {"num_classes": 7, "in_channels": 1,
                                              "width_mult": 1.0, "input_size": [28, 28]}


def test_arch_records_every_argument():
    model = create("vgg14", num_classes=100, in_channels=1, width_mult=0.25, input_size=(64, 48))
    assert model.torchslim_arch == {
        "name": "vgg14",
        "kwargs": {"num_classes": 100, "in_channels": 1, "width_mult": 0.25,
                   "input_size": [64, 48]},
    }
    assert model.input_shape == (1, 64, 48)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 64, 48)).shape == (2, 100)


def test_input_size_shapes_lenet5_classifier():
    model = create("lenet5", input_size=(32, 32))
    assert model.input_shape == (1, 32, 32)
    assert model.classifier[0].in_features == 16 * 6 * 6
    assert create("lenet5").classifier[0].in_features == 16 * 5 * 5
    assert create("lenet5", input_size=20).input_shape == (1, 20, 20)
    with pytest.raises(UserError, match="12x12"):
        create("lenet5", input_size=(10, 28))


def test_lenet5_caffe_is_the_20_50_500_net():
    model = create("lenet5-caffe")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [20, 50] and convs[0].padding == (0, 0)
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(50 * 4 * 4, 500), (500, 10)]
    # Caffe's 431,080 parameters less its 580 biases
    assert sum(p.numel() for p in model.parameters() if p.dim() > 1) == 430_500
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError, match="16x16"):
        create("lenet5-caffe", input_size=(14, 28))


def test_lenet300_flattens_any_input_shape():
    assert create("lenet300").classifier[0].in_features == 784
    model = create("lenet300", in_channels=3, input_size=(32, 32)).eval()
    assert model.classifier[0].in_features == 3 * 32 * 32
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _tiny(num_classes=10, in_channels=3, width_mult=1.0, hidden=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 8 * 8, hidden),
                         nn.Linear(hidden, num_classes))


def test_register_model_passes_and_records_extra_options(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    assert register_model("tiny", input_shape=(2, 8, 8))(_tiny) is _tiny
    assert "tiny" in list_models()
    model = create("tiny", hidden=5)
    assert model[1].out_features == 5
    assert model.input_shape == (2, 8, 8)
    arch = json.loads(json.dumps(model.torchslim_arch))
    assert arch["kwargs"]["hidden"] == 5
    assert create(arch["name"], **arch["kwargs"])[1].out_features == 5
    with pytest.raises(UserError, match="hidden"):
        create("tiny", depth=2)
    with pytest.raises(UserError, match="JSON"):
        create("tiny", hidden=object())
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny")(_tiny)
