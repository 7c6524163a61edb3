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
    pruned = sparsify(model, config, train, TrainConfig(epochs=2, lr=0.02, batch_size=64, augment=False))
    for row in sparsity_report(pruned)["layers"]:
        assert row["nonzero"] == round(0.2 * row["params"])  # exact: momentum never revived a weight
    assert top1(pruned) >= 0.85
