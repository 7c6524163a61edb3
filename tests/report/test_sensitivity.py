"""sensitivity_sweep: each channel group pruned alone, on copies, by the requested ratios."""

import pytest
import torch
from torch import nn

from torchslim import models
from torchslim.data import load_dataset
from torchslim.errors import UserError
from torchslim.prune import PruneConfig, channel_groups, prune, sensitivity_sweep
from torchslim.prune import sensitivity as sensitivity_module
from torchslim.train import evaluate

RATIOS = (0.25, 0.5, 0.75)


def _model():
    """A width-1/8 vgg11 with non-trivial BN statistics, so pruning changes the outputs."""
    torch.manual_seed(0)
    model = models.create("vgg11", num_classes=10, width_mult=0.125)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def _shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def digits_test():
    """64 test images (a class-balanced subset), all of which the sweep evaluates."""
    return load_dataset("digits-32", split="test").subset(64)


@pytest.fixture(scope="module")
def swept(digits_test):
    """One sweep over every image, recording the parameter shapes of each evaluated copy."""
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def spy(evaluated, data, **kwargs):
        seen.append(_shapes(evaluated))
        return evaluate(evaluated, data, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(sensitivity_module, "evaluate", spy)
    try:
        result = sensitivity_sweep(model, digits_test, ratios=RATIOS, max_images=10_000)
    finally:
        patch.undo()
    return model, before, result, seen


def test_result_shape(swept, digits_test):
    model, _, result, _ = swept
    groups = [g for g in channel_groups(model) if len(g) > 1]
    assert set(result) == {"criterion", "ratios", "baseline_top1", "images", "layers"}
    assert result["criterion"] == "l1" and result["ratios"] == list(RATIOS)
    assert result["images"] == len(digits_test) == 64
    assert [row["layer"] for row in result["layers"]] == [g.name for g in groups]
    assert [row["channels"] for row in result["layers"]] == [len(g) for g in groups]
    assert result["layers"][0]["layer"] == "features.0" and result["layers"][0]["channels"] == 8
    values = [result["baseline_top1"]] + [t for row in result["layers"] for t in row["top1"]]
    assert all(0.0 <= t <= 1.0 for t in values)
    assert result["baseline_top1"] == evaluate(model, digits_test)["top1"]


def test_ratios_are_honoured(swept):
    _, _, result, _ = swept
    for row in result["layers"]:
        assert row["kept"] == [round(row["channels"] * (1 - r)) for r in RATIOS], row


def test_each_copy_has_only_its_group_pruned(swept):
    """The copies evaluated: first the untouched model, then one per (group, ratio) in which
    only the group's conv (out), its BN and the next conv (in) lost channels."""
    model, _, result, seen = swept
    original = _shapes(model)
    assert seen[0] == original and len(seen) == 1 + len(result["layers"]) * len(RATIOS)
    copies = iter(seen[1:])
    groups = {g.name: g for g in channel_groups(model)}
    for row in result["layers"]:
        group = groups[row["layer"]]
        for kept in row["kept"]:
            shapes = next(copies)
            changed = {name for name in original if shapes[name] != original[name]}
            members = {m.module for m in group.members}
            assert changed and {name.rsplit(".", 1)[0] for name in changed} <= members
            for member in group.members:
                weight = shapes[member.module + ".weight"]
                assert weight[0 if member.role == "out" else 1] == kept


def test_matches_prune_with_every_other_group_ignored(swept, digits_test):
    """The public prune() with all other groups' BN layers ignored cuts the same channels."""
    model, _, result, _ = swept
    row = result["layers"][2]
    others = [f"features.{int(g.name.split('.')[1]) + 1}" for g in channel_groups(model) if g.name != row["layer"]]
    config = PruneConfig(criterion="l1", ratio=0.5, scope="layer", ignored_layers=tuple(others))
    pruned = prune(model, config=config).model
    assert pruned.get_submodule(row["layer"]).out_channels == row["kept"][1]
    assert evaluate(pruned, digits_test)["top1"] == row["top1"][1]


def test_callers_model_is_unchanged(swept):
    model, before, _, _ = swept
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_image_cap_and_data_criterion(digits_test):
    result = sensitivity_sweep(_model(), digits_test, ratios=[0.5], criterion="taylor", max_images=30, batch_size=16)
    assert result["images"] == 30 and result["criterion"] == "taylor" and result["ratios"] == [0.5]
    assert [row["kept"] for row in result["layers"]][:2] == [[4], [8]]
    assert all(len(row["top1"]) == 1 and 0 <= row["top1"][0] <= 1 for row in result["layers"])


@pytest.mark.parametrize("kwargs, message", [
    ({"ratios": ()}, "at least one"),
    ({"ratios": (0.0, 0.5)}, r"\(0, 1\)"),
    ({"ratios": (0.5, 1.0)}, r"\(0, 1\)"),
    ({"ratios": (-0.25,)}, r"\(0, 1\)"),
    ({"ratios": ("half",)}, "number"),
    ({"ratios": 0.5}, "list"),
    ({"criterion": "l1x"}, "did you mean 'l1'"),
    ({"max_images": 0}, "max_images"),
])
def test_bad_arguments_raise_user_error(kwargs, message, digits_test):
    with pytest.raises(UserError, match=message):
        sensitivity_sweep(_model(), digits_test, **kwargs)


def test_data_of_the_wrong_shape_is_a_user_error():
    with pytest.raises(UserError, match="expects input 3x32x32"):
        sensitivity_sweep(_model(), load_dataset("digits", split="test"), max_images=10)
