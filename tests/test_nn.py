"""The shared module helpers of torchslim.nn."""

import pytest
from torch import nn

from torchslim.errors import UserError
from torchslim.nn import Registry, pair, record_meta, set_submodule, weight_layers


def _net():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Linear(4, 3)))


def test_set_submodule_replaces_at_a_dotted_path_and_at_the_top():
    net = _net()
    set_submodule(net, "1.1", nn.Identity())
    set_submodule(net, "0", nn.Conv2d(1, 5, 1))
    assert isinstance(net[1][1], nn.Identity) and net[0].out_channels == 5


def test_weight_layers_lists_conv_and_linear_by_path_in_order():
    assert list(weight_layers(_net())) == ["0", "1.1"]


def test_record_meta_merges_into_a_new_dict_from_the_source():
    source, copy = _net(), _net()
    source.torchslim_meta = {"top1": 0.5, "data": "digits"}
    record_meta(copy, source, top1=0.7, pruned={"ratio": 0.5})
    assert copy.torchslim_meta == {"top1": 0.7, "data": "digits", "pruned": {"ratio": 0.5}}
    assert source.torchslim_meta == {"top1": 0.5, "data": "digits"}  # the source's notes are untouched
    assert record_meta(_net(), x=1).torchslim_meta == {"x": 1}


def test_pair():
    assert pair(3) == (3, 3) and pair([1, 2]) == (1, 2) and pair((4, 5)) == (4, 5)


def test_registry_refuses_an_unknown_name_with_a_guess():
    methods = Registry("low-rank method", {"svd": 1})
    methods.register("tucker")(2)
    assert methods["tucker"] == 2 and sorted(methods) == ["svd", "tucker"]
    with pytest.raises(UserError, match=r"unknown low-rank method 'tuker' \(did you mean 'tucker'\?\); choose from: svd, tucker"):
        methods["tuker"]
    assert methods.get("tuker") is None  # get() keeps dict semantics


def test_type_registry_finds_the_nearest_registered_base():
    from torchslim.nn import TypeRegistry

    class Wide(nn.Conv2d):
        pass

    rules = TypeRegistry("rule")
    rules.register(nn.Conv2d, "conv")
    rules.register(nn.Module)("any")
    assert rules.find(Wide(1, 1, 1)) == "conv" and rules.find(Wide) == "conv" and rules.find(nn.ReLU()) == "any"
    assert TypeRegistry("rule").find(nn.ReLU()) is None


def test_fold_batchnorm_folds_only_the_types_asked_for():
    import torch

    from torchslim.nn import fold_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4))
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 2, 3, 4)
    folded, convs_only = fold_batchnorm(net), fold_batchnorm(net, types=(nn.Conv2d,))
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert isinstance(convs_only[1], nn.Identity) and isinstance(convs_only[4], nn.BatchNorm1d)
    assert torch.allclose(folded(x), net(x), atol=1e-5) and torch.allclose(convs_only(x), net(x), atol=1e-5)
    assert isinstance(net[1], nn.BatchNorm2d)  # the caller's model is unchanged
