import copy

import pytest
import torch

from torchslim import models
from torchslim.data import load_dataset
from torchslim.distill import DistillConfig, HintedStudent, distill, hint_loss_fn, parse_hint
from torchslim.errors import UserError
from torchslim.train import TrainConfig, evaluate


def _net(width, seed=0):
    torch.manual_seed(seed)
    return models.create("resnet20", num_classes=10, in_channels=1, width_mult=width, input_size=(8, 8)).eval()


def _layers(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]


def test_parse_hint():
    assert parse_hint("a.1: b.2") == ("a.1", "b.2")
    for bad in ("a.1", ":b", "a:"):
        with pytest.raises(UserError, match="STUDENT_LAYER:TEACHER_LAYER"):
            parse_hint(bad)


def test_adapter_only_when_widths_differ_and_zero_loss_for_a_copy():
    teacher = _net(0.5)
    layer = _layers(teacher)[1]
    same = HintedStudent(copy.deepcopy(teacher), teacher, [f"{layer}:{layer}"], (1, 8, 8))
    assert isinstance(same.adapters[0], torch.nn.Identity)
    loss_fn = hint_loss_fn(same, teacher, weight=1.0, alpha=0.5)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    same.eval()
    _, logits = loss_fn(same, x, y)
    assert same.hint_loss(loss_fn_features(loss_fn, teacher, x, layer)) == 0

    thin = HintedStudent(_net(0.25, seed=1), teacher, [f"{layer}:{layer}"], (1, 8, 8))
    adapter = thin.adapters[0]
    assert isinstance(adapter, torch.nn.Conv2d) and adapter.kernel_size == (1, 1)
    assert (adapter.in_channels, adapter.out_channels) == (4, 8)


def loss_fn_features(loss_fn, teacher, x, layer):
    recorded = []
    handle = dict(teacher.named_modules())[layer].register_forward_hook(lambda m, i, o: recorded.append(o))
    with torch.no_grad():
        teacher(x)
    handle.remove()
    return recorded


def test_hint_gradient_reaches_student_and_adapter_not_teacher():
    teacher = _net(0.5)
    layer = _layers(teacher)[2]
    hinted = HintedStudent(_net(0.25, seed=1).train(), teacher, [f"{layer}:{layer}"], (1, 8, 8))
    loss_fn = hint_loss_fn(hinted, teacher, weight=10.0, alpha=0.0)  # labels + hint only
    loss, _ = loss_fn(hinted, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    loss.backward()
    assert hinted.adapters[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_unknown_layer_lists_choices():
    teacher = _net(0.5)
    with pytest.raises(UserError, match="unknown student layer 'features.99'"):
        HintedStudent(_net(0.25), teacher, ["features.99:" + _layers(teacher)[0]], (1, 8, 8))


def test_hints_with_cache_are_refused(tmp_path):
    with pytest.raises(UserError, match="cannot use a logit cache"):
        DistillConfig(hints=("a:b",), cache_dir=str(tmp_path))


def test_distill_with_hints_trains_and_leaves_a_plain_student():
    train, test = load_dataset("digits", "train").subset(600), load_dataset("digits", "test")
    teacher = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))
    student = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8), width_mult=0.25)
    result = distill(student, DistillConfig(alpha=0.0, hints=("classifier.2:classifier.2",), hint_weight=0.1),
                     train, teacher=teacher, train_config=TrainConfig(epochs=3, batch_size=64, augment=False),
                     progress=False)
    assert result.history["distill"]["hints"] == ["classifier.2:classifier.2"]
    trained = result.model
    assert not any(m._forward_hooks for m in trained.modules()) and not any(m._forward_hooks for m in teacher.modules())
    assert evaluate(trained, test)["top1"] >= 0.7
