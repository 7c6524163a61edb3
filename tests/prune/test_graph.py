"""The channel dependency graph and surgery on the structures the issue names."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import UserError
from torchslim.prune import PassThroughRule, build_graph, register_rule, remove_channels
from torchslim.prune.rules import _MODULES as _RULES

from .conftest import build


def _group(graph, name):
    return next(g for g in graph.groups if g.name == name)


def _zero_out_units(model, group, units):
    for member, positions in zip(group.members, group.positions):
        if member.role == "out":
            module = model.get_submodule(member.module)
            for attr in ("weight", "bias"):
                tensor = getattr(module, attr, None)
                if tensor is not None:
                    tensor.data[[p for u in units for p in positions[u]]] = 0


def _assert_same(model, pruned, shape):
    x = torch.randn(3, *shape, dtype=torch.float64)
    with torch.no_grad():
        a, b = model.double()(x), pruned.double()(x)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-12 * max(1.0, a.abs().max().item())


def test_conv_bn_relu_chain_groups():
    graph = build_graph(build("vgg11"))
    assert len(graph.groups) == 8  # one per conv
    first = graph.groups[0]
    assert {(m.module, m.role) for m in first.members} == {
        ("features.0", "out"), ("features.1", "out"), ("features.4", "in")}
    assert str(first).startswith("<ChannelGroup group 0 (features.0): 8 channels")


def test_flatten_into_linear_spans_height_times_width():
    model = build("lenet5")  # conv2 output 16 x 5 x 5 flattened into 400 features
    graph = build_graph(model)
    group = _group(graph, "features.4")
    linear = [p for m, p in zip(group.members, group.positions) if m.module == "classifier.0"][0]
    assert [len(p) for p in linear] == [25] * 16
    assert linear[1] == list(range(25, 50))
    pruned = remove_channels(model, {"features.4": [1, 7]}).model
    assert pruned.classifier[0].in_features == 14 * 25


def test_residual_adds_prune_every_member_with_the_same_indices():
    model = build("resnet20", width=0.25)
    graph = build_graph(model)
    stage = _group(graph, "conv1")  # the stem and the whole first stage share channels
    members = {m.module for m in stage.members}
    assert {"conv1", "stages.0.0.conv2", "stages.0.2.conv2", "stages.1.0.conv1", "stages.1.0.shortcut.0"} <= members
    _zero_out_units(model, stage, [0, 2])
    pruned = remove_channels(model, {"conv1": [0, 2]}).model
    assert pruned.conv1.out_channels == pruned.stages[0][2].conv2.out_channels == 2
    assert pruned.stages[1][0].shortcut[0].in_channels == 2
    _assert_same(model, pruned, (3, 32, 32))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.grouped = nn.Conv2d(10, 10, 3, padding=1, groups=2)
        self.head = nn.Conv2d(10, 5, 1)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        return self.head(F.relu(self.grouped(y))).mean((2, 3))


def test_concat_with_offsets_and_grouped_conv():
    torch.manual_seed(0)
    model = _Concat().eval()
    graph = build_graph(model)
    # grouped conv couples position j of its two input halves: a's channels 0..3 with b's 1..4
    head_group = _group(graph, "grouped")
    assert len(head_group) == 5
    cat_group = [g for g in graph.groups if "a" in {m.module for m in g.members}][0]
    positions = dict(zip([(m.module, m.role) for m in cat_group.members], cat_group.positions))
    assert positions[("grouped", "in")][0] == [0, 5]  # offset 4 of b inside the concat, coupled at j
    _zero_out_units(model, cat_group, [1])
    pruned = remove_channels(model, {cat_group.index: [1]}).model
    assert pruned.grouped.in_channels == 8 and pruned.grouped.groups == 2
    _assert_same(model, pruned, model.input_shape)


def test_depthwise_and_shuffle_models_stay_exact():
    for name in ("mobilenetv2", "shufflenetv2"):
        model = build(name)
        graph = build_graph(model)
        selection = {}
        for group in graph.groups:
            if len(group) > 2:
                selection[group.index] = [0]
                _zero_out_units(model, group, [0])
        assert any("branch2.3" in m.module or "conv.3" in m.module for g in graph.groups for m in g.members)
        pruned = remove_channels(model, selection).model
        _assert_same(model, pruned, model.input_shape)


class _Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        x = torch.sort(self.conv(x), dim=1).values  # mixes the channels
        return self.fc(self.conv2(x).mean((2, 3)))


def test_unknown_op_is_a_boundary_or_a_named_error():
    graph = build_graph(_Sorted())
    assert [g.name for g in graph.groups] == ["conv2"]
    assert "sort" in graph.boundaries[0]
    with pytest.raises(UserError, match="node 'sort'"):
        build_graph(_Sorted(), strict=True)


class Scale(nn.Module):
    """A custom layer with one learnable (log) scale per channel."""

    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x):
        return x * self.scale.exp().view(1, -1, 1, 1)


class _ScaleRule(PassThroughRule):
    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        slots = super().trace(graph, name, module, inputs, in_metas, out_meta)
        graph.add_member(name, "out", slots)
        return slots

    def prune_out(self, module, keep):
        module.scale = nn.Parameter(module.scale.data[keep].clone())


class _WithScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.scale = Scale(6)
        self.fc = nn.Linear(6, 2)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        return self.fc(self.scale(self.conv(x)).mean((2, 3)))


def test_a_registered_rule_makes_a_custom_layer_prunable():
    torch.manual_seed(0)
    model = _WithScale()
    assert build_graph(model).groups == []  # its computed per-channel constant pins the channels
    register_rule(Scale, _ScaleRule())
    try:
        graph = build_graph(model)
        assert [(m.module, m.role) for m in graph.groups[0].members] == [
            ("conv", "out"), ("scale", "out"), ("fc", "in")]
        _zero_out_units(model, graph.groups[0], [2, 3])
        pruned = remove_channels(model, {0: [2, 3]}).model
        assert pruned.scale.scale.shape == (4,) and pruned.fc.in_features == 4
        _assert_same(model, pruned, model.input_shape)
    finally:
        del _RULES[Scale]


def test_untraceable_model_is_a_user_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UserError, match="torch.fx"):
        build_graph(Dynamic(), torch.randn(1, 3, 4, 4))
