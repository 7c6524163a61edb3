import pytest
import torch
from torch import nn

from torchslim.errors import UserError
from torchslim.sparse import (SCHEDULES, MaskSet, SparsityConfig, cubic_ramp, magnitude_masks, prunable_layers,
                              sparsify, sparsity_report)
from torchslim.train import TrainConfig

from .helpers import digits, top1, trained_mlp


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_layer_scope_hits_the_target_in_every_layer(sparsity):
    layers = prunable_layers(_net())
    masks = magnitude_masks(layers, sparsity, "layer")
    for path, mask in masks.items():
        assert mask.numel() - int(mask.sum()) == round(sparsity * mask.numel())
        weight = layers[path].weight.detach().abs()
        if 0 < sparsity:  # every kept weight is at least as large as every pruned one
            assert weight[mask].min() >= weight[~mask].max()


def test_global_scope_uses_one_threshold():
    layers = prunable_layers(_net())
    masks = magnitude_masks(layers, 0.7, "global")
    kept = torch.cat([layers[p].weight.detach().abs()[m] for p, m in masks.items()])
    pruned = torch.cat([layers[p].weight.detach().abs()[~m] for p, m in masks.items()])
    assert kept.min() >= pruned.max()
    assert MaskSet(masks).sparsity() == pytest.approx(0.7, abs=1e-3)


def test_bad_sparsity_and_unknown_layers_are_user_errors():
    with pytest.raises(UserError):
        SparsityConfig(sparsity=1.0)
    with pytest.raises(UserError):
        SparsityConfig(schedule="sometimes")
    with pytest.raises(UserError):
        sparsify(_net(), SparsityConfig(exclude=("nope",)))


def test_cubic_ramp():
    assert cubic_ramp(0.0) == 0.0 and cubic_ramp(1.0) == 1.0
    assert cubic_ramp(0.5) == pytest.approx(0.875)


def test_oneshot_copy_leaves_caller_untouched_and_report_is_exact():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = sparsify(model, SparsityConfig(sparsity=0.8, exclude=("3",)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    report = sparsity_report(pruned)
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["0"]["nonzero"] == 120 and rows["2"]["nonzero"] == 60
    assert rows["3"]["sparsity"] == 0.0
    assert report["nonzero"] == 120 + 60 + 216


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedules_fine_tune_with_masks_held(schedule):
    train, _ = digits()
    model = trained_mlp()
    config = SparsityConfig(sparsity=0.8, schedule=schedule, rounds=2, agp_every=5)
    pruned = sparsify(model, config, train, train_config=TrainConfig(epochs=2, lr=0.02, batch_size=64, augment=False))
    for row in sparsity_report(pruned)["layers"]:
        assert row["nonzero"] == round(0.2 * row["params"])  # exact: momentum never revived a weight
    assert top1(pruned) >= 0.85


def _bn_net():
    """Linear(4, 2) -> BatchNorm: row 0 large but scaled down by its BatchNorm, row 1 small but scaled up."""
    net = nn.Sequential(nn.Linear(4, 2, bias=False), nn.BatchNorm1d(2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[4.0, 5.0, 6.0, 7.0], [0.1, 0.2, 0.3, 0.4]]))
        net[1].running_var.copy_(torch.tensor([1e4 - 1e-5, 1e-4 - 1e-5]))  # scale 1/100 and 100
    return net


def test_folded_criterion_ranks_the_weights_as_deployed():
    from torchslim.sparse import CRITERIA

    net = _bn_net()
    layers = prunable_layers(net)
    folded = CRITERIA["folded"](net, layers)["0"]
    expected = torch.tensor([[0.04, 0.05, 0.06, 0.07], [10.0, 20.0, 30.0, 40.0]])
    assert torch.allclose(folded, expected, rtol=1e-4)
    by_weight = magnitude_masks(layers, 0.5)["0"]
    by_folded = magnitude_masks(layers, 0.5, scores=CRITERIA["folded"](net, layers))["0"]
    assert by_weight.tolist() == [[True] * 4, [False] * 4]
    assert by_folded.tolist() == [[False] * 4, [True] * 4]
    pruned = sparsify(net, SparsityConfig(sparsity=0.5, criterion="folded"))
    assert torch.equal(pruned[0].weight, net[0].weight * by_folded)  # the BatchNorm itself left as it was
    assert torch.equal(pruned[1].running_var, net[1].running_var)
    with pytest.raises(UserError, match="sparsity criterion"):
        SparsityConfig(criterion="gradient")


def test_cli_criterion_choices_are_the_registry():
    import argparse

    from torchslim.cli import compress_weights
    from torchslim.sparse import CRITERIA

    subparsers = argparse.ArgumentParser().add_subparsers()
    compress_weights.add_parser(subparsers)
    action = next(a for a in subparsers.choices["compress-weights"]._actions if a.dest == "criterion")
    assert set(action.choices) == set(CRITERIA) and action.default is None  # None: not given; the verb's own default is magnitude
