"""Iterative pruning rounds, checkpoints and resume; regularisers; criterion quality."""

import json

import pytest
import torch

from torchslim.profile import count_macs
from torchslim.prune import PruneConfig, build_graph
from torchslim.prune.quality import criterion_quality, spearman
from torchslim.prune.regularize import Regularizer, regularized_loss
from torchslim.prune.schedule import iterative_prune

from .conftest import build, calibration


def _shrink_bn(model, round_index, checkpoint):
    # A stand-in fine-tune that changes the weights deterministically.
    for p in model.parameters():
        p.data.mul_(0.99)


def test_rounds_remove_step_channels_until_the_target(tmp_path):
    model = build("vgg11", width=0.25)
    config = PruneConfig(criterion="l1", target_macs=0.5, scope="global")
    pruned, rounds = iterative_prune(model, config, tmp_path / "run", finetune=_shrink_bn,
                                     evaluate=lambda m: 0.5, step_channels=40, log=None)
    macs0 = count_macs(model, model.input_shape)
    assert count_macs(pruned, model.input_shape) <= 0.5 * macs0
    assert len(rounds) >= 3
    assert all(r["top1"] == 0.5 and r["channels_removed"] for r in rounds)
    assert all(abs(sum(r["channels_removed"].values()) - 40) <= 8 for r in rounds[:-1])
    assert [r["macs"] for r in rounds] == sorted((r["macs"] for r in rounds), reverse=True)
    assert json.loads((tmp_path / "run" / "log.json").read_text())["rounds"] == rounds


def test_geometric_rounds_reach_the_target_in_exactly_k_steps(tmp_path):
    model = build("vgg11", width=0.25)
    config = PruneConfig(criterion="l1", target_macs=0.3, target_params=0.25, scope="global")
    pruned, rounds = iterative_prune(model, config, tmp_path / "run", finetune=_shrink_bn, rounds=3, log=None)
    macs0 = count_macs(model, model.input_shape)
    assert len(rounds) == 3
    for k, record in enumerate(rounds, start=1):  # each round keeps about 0.3 ** (k / 3) of the MACs
        assert record["macs_kept"] <= 0.3 ** (k / 3) + 1e-9
        assert record["macs_kept"] >= 0.3 ** (k / 3) - 0.06
    assert count_macs(pruned, model.input_shape) <= 0.3 * macs0
    assert sum(p.numel() for p in pruned.parameters()) <= 0.25 * sum(p.numel() for p in model.parameters())


def test_an_interrupted_run_resumes_with_the_same_result(tmp_path):
    model = build("vgg11", width=0.25)
    config = PruneConfig(criterion="l2", target_macs=0.4)
    full, full_rounds = iterative_prune(model, config, tmp_path / "a", finetune=_shrink_bn, step_channels=50,
                                        log=None)
    calls = []

    def crash_in_round_3(m, index, checkpoint):
        if index == 3:
            raise KeyboardInterrupt
        calls.append(index)
        _shrink_bn(m, index, checkpoint)

    with pytest.raises(KeyboardInterrupt):
        iterative_prune(model, config, tmp_path / "b", finetune=crash_in_round_3, step_channels=50, log=None)
    assert calls == [1, 2] and (tmp_path / "b" / "round003.pruned.safetensors").exists()
    resumed, rounds = iterative_prune(model, config, tmp_path / "b", finetune=_shrink_bn, step_channels=50, log=None)
    assert rounds == full_rounds
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(full.eval()(x), resumed.eval()(x))


@pytest.mark.parametrize("kind", ["oicsr", "slim"])
def test_regularisers_give_the_expected_penalty_and_gradient(kind):
    model = build("vgg11")
    regularizer = Regularizer(model, kind, 0.1)
    penalty = regularizer.penalty()
    if kind == "slim":
        expected = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    else:
        graph = build_graph(model)
        expected = 0.0
        for group in graph.groups:  # out rows of conv l and in columns of conv l+1, one norm per channel
            conv_out = model.get_submodule(group.members[0].module).weight
            consumer = model.get_submodule(group.members[-1].module)
            for unit in range(len(group)):
                energy = conv_out[unit].pow(2).sum() + consumer.weight[:, unit].pow(2).sum()
                expected = expected + energy.sqrt()
    assert penalty.item() == pytest.approx(0.1 * float(torch.as_tensor(expected).detach()), rel=1e-4)
    loss, logits = regularized_loss(regularizer)(model, *calibration("vgg11")[0])
    loss.backward()
    assert logits.shape == (8, 10)
    assert model.features[0].weight.grad is not None and model.features[1].weight.grad.abs().sum() > 0


def test_spearman_matches_its_definition():
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.9486833, abs=1e-6)


def test_criterion_quality_rates_the_oracle_perfectly():
    model = build("lenet5")
    quality = criterion_quality(model, calibration("lenet5", 16), criteria=["oracle", "l1", "random"])
    assert quality["oracle"]["per_layer"] == pytest.approx(1.0)
    assert quality["oracle"]["global"] == pytest.approx(1.0)
    assert -1 <= quality["random"]["per_layer"] <= 1
