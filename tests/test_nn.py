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
