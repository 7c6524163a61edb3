import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.lowrank import (LOWRANK_METHODS, LowRankConfig, energy_rank, factorize, spatial_svd_conv, svd_linear,
                               tucker2_conv)
from torchslim.profile import count_macs

from ..sparse.helpers import top1, trained_mlp


def test_svd_at_full_rank_is_exact():
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    x = torch.randn(5, 20)
    assert torch.allclose(svd_linear(layer, 12)(x), layer(x), atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_spatial_svd_and_tucker_at_full_rank_are_exact(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=stride, padding=1, bias=True)
    x = torch.randn(2, 5, 9, 9)
    assert torch.allclose(spatial_svd_conv(conv, 15)(x), conv(x), atol=1e-5)
    assert torch.allclose(tucker2_conv(conv, 7, 5)(x), conv(x), atol=1e-5)


def test_truncation_error_matches_the_dropped_singular_values():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20, bias=False)
    s = torch.linalg.svdvals(layer.weight.detach())
    pair = svd_linear(layer, 8)
    approx = pair[1].weight @ pair[0].weight
    assert torch.linalg.matrix_norm(approx - layer.weight).item() == pytest.approx(s[8:].norm().item(), rel=1e-4)


def test_energy_rank():
    values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1: 9/14, 13/14, 1
    assert [energy_rank(values, e) for e in (0.5, 0.65, 0.9, 0.95, 1.0)] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize("method", sorted(LOWRANK_METHODS))
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_mac_target_is_met(method, target):
    torch.manual_seed(0)
    model = models.create("vgg11", num_classes=10, width_mult=0.125).eval()
    shape = (3, 32, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [(name, type(m)) for name, m in model.named_modules()]
    factored = factorize(model, LowRankConfig(method=method, target_macs=target), input_shape=shape)
    ratio = count_macs(factored, shape) / count_macs(model, shape)
    assert ratio <= target
    assert ratio >= target - 0.1  # the search does not overshoot much
    # the caller's model is left untouched
    assert [(name, type(m)) for name, m in model.named_modules()] == types
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())


def test_unreachable_target_is_a_user_error():
    model = models.create("vgg11", num_classes=10, width_mult=0.125).eval()
    with pytest.raises(UserError):
        factorize(model, LowRankConfig(target_macs=0.001), input_shape=(3, 32, 32))


def test_factorised_model_saves_and_keeps_accuracy(tmp_path):
    model = trained_mlp()
    factored = factorize(model, LowRankConfig(energy=0.95), input_shape=(1, 8, 8))
    assert factored.torchslim_meta["lowrank"]["layers"]
    torchslim.save(factored, tmp_path / "f.safetensors")
    loaded = torchslim.load(tmp_path / "f.safetensors")
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded(x), factored(x))
    assert top1(factored) >= top1(model) - 0.1
