"""Every criterion on every zoo model, at several ratios, through selection and surgery."""

import copy
import functools
import zlib

import pytest
import torch

from torchslim import models
from torchslim.profile import count_macs
from torchslim.prune import Context, PruneConfig, build_graph, list_criteria, register_criterion
from torchslim.prune.criteria import CRITERIA, score_groups
from torchslim.prune.select import CostModel, _State, select_channels
from torchslim.prune.surgery import apply_removal

from .conftest import build, calibration

RATIOS = (0.2, 0.5, 0.7)


def _ratio(name: str, criterion: str) -> float:
    # Each (model, criterion) pair gets one ratio, spread evenly and deterministically.
    return RATIOS[zlib.crc32(f"{name}/{criterion}".encode()) % len(RATIOS)]


@functools.lru_cache(maxsize=None)
def _planned(name):
    model = build(name)
    graph = build_graph(model)
    return model, graph, Context(model, graph, calibration(name, 2)), CostModel(model, graph, model.input_shape)


@pytest.mark.parametrize("criterion", list_criteria())
@pytest.mark.parametrize("name", models.list_models())
def test_every_model_criterion_and_ratio(name, criterion):
    model, graph, ctx, cost = _planned(name)
    if criterion == "oracle":  # one forward per channel and image: one image keeps every model quick
        x, y = calibration(name, 2)[0]
        ctx = Context(model, graph, [(x[:1], y[:1])])
    scores = score_groups(criterion, graph.groups, ctx)
    assert [len(s) for s in scores] == [len(g) for g in graph.groups]
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores)
    ratio = _ratio(name, criterion)
    config = PruneConfig(criterion=criterion, ratio=ratio, scope="global")
    removed, counts = select_channels(graph.groups, scores, cost, config)
    total = sum(len(g) for g in graph.groups if len(g) > 1)
    assert sum(counts.values()) == pytest.approx(ratio * total, abs=1)
    predicted = _State(cost)
    for group in graph.groups:
        kept = {group.units.index(r) for r in group.units if r in removed}
        for unit in kept:
            predicted.remove(group, unit)
    pruned = copy.deepcopy(model)
    apply_removal(pruned, graph, removed)
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    macs = count_macs(pruned, model.input_shape)
    assert macs == pytest.approx(predicted.macs, rel=1e-9), "the cost model mispredicts the MACs"
    assert macs < count_macs(model, model.input_shape)


@pytest.mark.parametrize("criterion", [c for c in list_criteria() if c not in ("random",)])
def test_criteria_rank_dead_channels_last(criterion):
    """A channel whose filters, BN scale and shift are zero carries nothing: every criterion
    (but random) scores it no higher than any live channel of its group."""
    model = build("vgg11")
    graph = build_graph(model)
    group = graph.groups[2]
    for member, positions in zip(group.members, group.positions):
        module = model.get_submodule(member.module)
        if member.role == "out":
            for attr in ("weight", "bias"):
                if getattr(module, attr, None) is not None:
                    getattr(module, attr).data[positions[0]] = 0
    ctx = Context(model, graph, calibration("vgg11", 8))
    score = score_groups(criterion, [group], ctx)[0]
    assert score[0] <= score[1:].min() + 1e-12


def test_taylor_is_l2_normalised_per_layer():
    model, graph, ctx, _ = _planned("resnet20")
    for score in score_groups("taylor", graph.groups, ctx):
        assert score.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_l1_sums_the_whole_coupled_group():
    """Group-level L1: the producing filter, the BN scale and the next conv's input slice;
    with ``whole_group=False`` only the filter (Li et al.)."""
    model = build("vgg11")
    graph = build_graph(model)
    conv, norm, consumer = model.features[0], model.features[1], model.features[4]
    filters = conv.weight.abs().sum((1, 2, 3))
    group_score = score_groups("l1", graph.groups[:1], Context(model, graph))[0]
    expected = filters + norm.weight.abs() + consumer.weight.abs().sum((0, 2, 3))
    assert torch.allclose(group_score, expected, rtol=1e-6)
    filter_score = score_groups("l1", graph.groups[:1], Context(model, graph, whole_group=False))[0]
    assert torch.allclose(filter_score, filters)
    l2 = score_groups("l2", graph.groups[:1], Context(model, graph))[0]
    expected_l2 = (conv.weight.pow(2).sum((1, 2, 3)) + norm.weight.pow(2) + consumer.weight.pow(2).sum((0, 2, 3)))
    assert torch.allclose(l2, expected_l2.sqrt(), rtol=1e-6)


def test_l1_of_a_flattened_channel_counts_its_linear_features():
    """lenet5's second conv is flattened into a Linear: each channel owns H*W = 16 columns."""
    model = build("lenet5")
    graph = build_graph(model)
    group = graph.groups[1]  # features.4 -> features.5 -> classifier.0
    conv, norm, linear = model.features[4], model.features[5], model.classifier[0]
    columns = linear.weight.abs().reshape(linear.out_features, len(group), -1).sum((0, 2))
    expected = conv.weight.abs().sum((1, 2, 3)) + norm.weight.abs() + columns
    assert torch.allclose(score_groups("l1", [group], Context(model, graph))[0], expected, rtol=1e-6)


def test_taylor_group_sums_weight_times_gradient_over_the_group():
    """|w x dL/dw| over the producing filter, the BN scale and shift, and the
    flattened Linear's 16 columns per channel, on the same calibration loss."""
    import torch.nn.functional as F

    model = build("lenet5")
    graph = build_graph(model)
    group = graph.groups[1]  # features.4 -> features.5 -> classifier.0
    batches = calibration("lenet5", 16)
    score = score_groups("taylor-group", [group], Context(model, graph, batches))[0]
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(batches[0][0]), batches[0][1]).backward()
    conv, norm, linear = reference.features[4], reference.features[5], reference.classifier[0]

    def saliency(param):
        return (param.detach() * param.grad).abs()

    assert conv.bias is None
    expected = (saliency(conv.weight).sum((1, 2, 3)) + saliency(norm.weight)
                + saliency(norm.bias) + saliency(linear.weight).reshape(linear.out_features, len(group), -1).sum((0, 2)))
    assert torch.allclose(score, expected, rtol=1e-5, atol=1e-9)
    assert (expected > 0).all()


def test_oracle_is_the_exact_loss_change():
    import torch.nn.functional as F

    model = build("lenet5")
    graph = build_graph(model)
    batches = calibration("lenet5", 16)
    group = graph.groups[0]  # features.0: its channels feed features.4 after BN, ReLU, pool
    score = score_groups("oracle", [group], Context(model, graph, batches))[0]
    x, y = batches[0]
    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
        for unit in (0, 3):
            hooked = copy.deepcopy(model)
            hooked.features[3].register_forward_hook(lambda m, i, o, u=unit: o.index_fill(1, torch.tensor([u]), 0))
            assert score[unit].item() == pytest.approx(abs(F.cross_entropy(hooked(x), y) - base).item(), abs=1e-5)


def test_registered_criteria_are_picked_up():
    @register_criterion("first-is-best")
    def first_is_best(group, ctx):
        return torch.arange(len(group), 0, -1, dtype=torch.float32)

    try:
        model, graph, ctx, cost = _planned("vgg11")
        scores = score_groups("first-is-best", graph.groups, ctx)
        removed, _ = select_channels(graph.groups, scores, cost, PruneConfig(ratio=0.5, scope="layer"))
        group = graph.groups[0]
        assert group.units[0] not in removed and group.units[-1] in removed
    finally:
        del CRITERIA["first-is-best"]
