"""prune() over every zoo model x every criterion: real, smaller, consistent models."""

import copy
import pytest
import torch

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.profile import count_macs, count_params
from torchslim.prune import PruneConfig, build_graph, prune, remove_channels

from .conftest import build, calibration

def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", models.list_models())
def test_prune_every_model(name):
    model = build(name)
    before = _state(model)
    config = PruneConfig(criterion="taylor", target_macs=0.6, scope="global", calibration_batches=1)
    result = prune(model, config, calibration(name))
    pruned = result.model
    x = torch.randn(3, *model.input_shape)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape == (3, 10)
    assert result.macs_after == count_macs(pruned, model.input_shape)
    assert result.macs_before == count_macs(model, model.input_shape)
    assert result.params_after == count_params(pruned) < result.params_before
    assert result.macs_after <= 0.6 * result.macs_before
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the caller's model changed"
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", models.list_models())
def test_removing_all_zero_channels_keeps_the_output(name):
    """Channels whose producing weights (conv/linear rows, BN scale and shift) are all zero
    output exact zeros, so removing them is exact maths.  The pruned layers sum fewer
    terms in a different blocking order, so the comparison runs in float64 and allows
    only rounding at machine precision."""
    model = build(name)
    graph = build_graph(model)
    selection = {}
    for group in graph.groups:
        units = list(range(0, len(group) - 1, 3))
        if not units:
            continue
        selection[group.index] = units
        for member, positions in zip(group.members, group.positions):
            if member.role != "out":
                continue
            module = model.get_submodule(member.module)
            index = [p for u in units for p in positions[u]]
            for attr in ("weight", "bias"):
                tensor = getattr(module, attr, None)
                if tensor is not None:
                    tensor.data[index] = 0
    result = remove_channels(model, selection)
    assert result.macs_after < 0.8 * result.macs_before
    x = torch.randn(4, *model.input_shape, dtype=torch.float64)
    with torch.no_grad():
        expected = model.double()(x)
        got = result.model.double()(x)
    assert (expected - got).abs().max().item() <= 1e-12 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("name", models.list_models())
def test_pruning_nothing_is_the_identity(name):
    model = build(name)
    result = prune(model, config=PruneConfig(ratio=0.0))
    assert result.model is not model
    assert result.macs_after == result.macs_before and result.params_after == result.params_before
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))


@pytest.mark.parametrize("name", models.list_models())
def test_pruned_model_saves_and_loads_bit_identically(name, tmp_path):
    model = build(name)
    pruned = prune(model, config=PruneConfig(criterion="l2", ratio=0.5, scope="layer")).model
    path = tmp_path / "pruned.safetensors"
    torchslim.save(pruned, path)
    loaded = torchslim.load(path)
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        assert torch.equal(pruned(x), loaded(x))
    assert count_params(loaded) == count_params(pruned) < count_params(model)
    for (k1, v1), (k2, v2) in zip(pruned.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="criterion"):
        PruneConfig(criterion="l3", ratio=0.5)
    for ratio in (-0.1, 1.0, 1.5):
        with pytest.raises(UserError, match="ratio"):
            PruneConfig(ratio=ratio)
    with pytest.raises(UserError, match="target_macs"):
        PruneConfig(target_macs=0.0)
    with pytest.raises(UserError, match="either ratio or targets"):
        PruneConfig(ratio=0.2, target_macs=0.5)
    with pytest.raises(UserError, match="recalibrate_bn must be true or false"):
        PruneConfig(ratio=0.2, recalibrate_bn="yes")
    with pytest.raises(UserError, match="scope"):
        PruneConfig(ratio=0.2, scope="everywhere")
    with pytest.raises(UserError, match="calibration"):
        prune(build("resnet20"), config=PruneConfig(criterion="taylor", ratio=0.2))


def test_same_seed_same_channels():
    model = build("vgg11")
    config = PruneConfig(criterion="random", ratio=0.4, seed=3)
    a, b = prune(model, config=config).model, prune(model, config=config).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = prune(model, config=PruneConfig(criterion="random", ratio=0.4, seed=4)).model
    assert any(x.shape != y.shape or not torch.equal(x, y)
               for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_config_round_trips_through_a_dict():
    config = PruneConfig(criterion="taylor", target_macs=0.4, scope="greedy", round_to=8,
                         ignored_layers=("features.0",))
    assert PruneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserError, match="option"):
        PruneConfig.from_dict({"ratio": 0.1, "speed": 2})


def test_model_is_untouched_when_surgery_fails(monkeypatch):
    from torchslim.prune import layers as surgery

    model = build("resnet20")
    before = _state(model)
    shapes = [p.shape for p in model.parameters()]

    def broken(self, module, keep):
        raise RuntimeError("boom")

    monkeypatch.setattr(surgery.LinearRule, "prune_in", broken)
    with pytest.raises(RuntimeError, match="boom"):
        prune(model, config=PruneConfig(criterion="l1", ratio=0.5))
    assert [p.shape for p in model.parameters()] == shapes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert copy.deepcopy(model)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
