"""Selection: targets, scopes, minimum channels, ignored layers and round-to-multiple."""

import pytest

from torchslim.errors import UserError
from torchslim.profile import count_macs, count_params
from torchslim.prune import SCOPES, PruneConfig, prune

from .conftest import build


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("target", [0.5, 0.33])
def test_mac_target_is_met_closely(scope, target):
    model = build("vgg16", width=0.25)
    result = prune(model, config=PruneConfig(criterion="l2", target_macs=target, scope=scope))
    kept = result.macs_after / result.macs_before
    assert target - 0.03 <= kept <= target


@pytest.mark.parametrize("scope", SCOPES)
def test_param_target_is_met(scope):
    model = build("resnet20", width=0.5)
    result = prune(model, config=PruneConfig(criterion="l1", target_params=0.4, scope=scope))
    assert 0.37 <= result.params_after / result.params_before <= 0.4
    assert result.params_after == count_params(result.model)


def test_layer_scope_removes_the_same_share_everywhere():
    model = build("vgg11", width=0.5)
    result = prune(model, config=PruneConfig(criterion="l1", ratio=0.25, scope="layer"))
    for row in result.channels:
        assert row["after"] == round(row["before"] * 0.75)


def test_round_to_keeps_multiples():
    model = build("vgg14", width=0.5)
    for scope in SCOPES:
        result = prune(model, config=PruneConfig(criterion="l1", target_macs=0.4, scope=scope, round_to=8))
        assert all(row["after"] % 8 == 0 for row in result.channels), scope
        assert result.macs_after <= 0.4 * result.macs_before


@pytest.mark.parametrize("scope", ["global", "greedy"])
def test_round_to_gives_back_what_the_targets_allow(scope):
    """Rounding overshoots the targets; the selection then restores blocks of ``round_to``
    channels until one more block in any group would miss a target."""
    from torchslim.prune import build_graph
    from torchslim.prune.criteria import Context, score_groups
    from torchslim.prune.select import CostModel, _State, select_channels

    model = build("vgg14", width=0.5)
    graph = build_graph(model)
    cost = CostModel(model, graph, model.input_shape)
    scores = score_groups("l1", graph.groups, Context(model, graph))
    config = PruneConfig(criterion="l1", target_macs=0.4, target_params=0.3, scope=scope, round_to=8)
    removed, counts = select_channels(graph.groups, scores, cost, config)

    def state_of(removed_units):
        state = _State(cost)
        for group in graph.groups:
            for unit in group.units:
                if unit in removed_units:
                    state.remove(group, group.units.index(unit))
        return state

    def met(state):
        return state.macs <= 0.4 * cost.total_macs and state.params <= 0.3 * cost.total_params

    assert met(state_of(removed))
    for group in graph.groups:
        gone = [u for u in group.units if u in removed]
        assert (len(group) - len(gone)) % 8 == 0 or not gone
        if gone:  # give back up to 8 of them: some target must break
            assert not met(state_of(removed - set(gone[:8]))), group.name


def test_min_channels_and_ignored_layers():
    model = build("vgg11", width=0.5)
    config = PruneConfig(criterion="l1", ratio=0.9, scope="global", min_channels=6,
                         ignored_layers=("features.4", "features.1[14]"))
    result = prune(model, config=config)
    rows = {row["group"]: row for row in result.channels}
    assert rows["features.4"]["after"] == rows["features.4"]["before"]  # ignored by name
    assert rows["features.11"]["after"] == rows["features.11"]["before"]  # by glob pattern
    assert all(row["after"] >= 6 for row in result.channels)
    assert result.model.features[4].out_channels == model.features[4].out_channels


def test_unreachable_target_is_a_user_error():
    model = build("vgg11", width=0.25)
    with pytest.raises(UserError, match="cannot reach the MACs target"):
        prune(model, config=PruneConfig(criterion="l1", target_macs=0.01, min_channels=4))


def test_greedy_is_cost_aware():
    """At the same MAC target, greedy (importance per MAC saved) removes fewer channels than
    a global ranking that ignores the cost of each channel."""
    model = build("vgg16", width=0.25)
    removed = {}
    for scope in ("global", "greedy"):
        result = prune(model, config=PruneConfig(criterion="random", target_macs=0.5, scope=scope))
        removed[scope] = sum(r["before"] - r["after"] for r in result.channels)
        assert count_macs(result.model, (3, 32, 32)) <= 0.5 * result.macs_before
    assert removed["greedy"] < removed["global"]


@pytest.mark.parametrize("scope", SCOPES)
def test_mac_and_param_targets_are_both_met(scope):
    model = build("vgg14", width=0.25)
    result = prune(model, config=PruneConfig(criterion="l1", target_macs=0.4, target_params=0.25, scope=scope))
    assert result.macs_after <= 0.4 * result.macs_before
    assert result.params_after <= 0.25 * result.params_before
    assert result.params_after == count_params(result.model)


def test_global_scope_meets_a_param_target_from_the_dense_layers():
    """vgg14's parameters sit in its last, 2x2 stage: the combined target takes them from
    there and still stops at the MAC target instead of pruning everything further."""
    model = build("vgg14", width=0.25)
    plain = prune(model, config=PruneConfig(criterion="l1", target_macs=0.4, scope="global"))
    both = prune(model, config=PruneConfig(criterion="l1", target_macs=0.4, target_params=0.25, scope="global"))
    assert plain.params_after > 0.25 * plain.params_before  # the MAC target alone does not get there
    assert 0.37 * both.macs_before <= both.macs_after <= 0.4 * both.macs_before
    last = {row["group"]: row for row in both.channels}["features.40"]
    first = {row["group"]: row for row in both.channels}["features.0"]
    assert last["after"] / last["before"] < first["after"] / first["before"]


def test_combined_targets_reject_a_ratio():
    with pytest.raises(UserError, match="either ratio or targets"):
        PruneConfig(ratio=0.3, target_params=0.5)
