import copy

import pytest
import torch

from torchslim import models
from torchslim.data import load_dataset
from torchslim.distill import kd_loss_fn, list_losses
from torchslim.errors import UserError
from torchslim.train import TrainConfig, evaluate, fit


def _lenet300(seed):
    torch.manual_seed(seed)
    return models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))


@pytest.fixture(scope="module")
def digits_teacher():
    torch.set_num_threads(1)
    train = load_dataset("digits", "train")
    teacher = _lenet300(0)
    fit(teacher, train, TrainConfig(epochs=6, batch_size=64, schedule="cosine", augment=False, seed=0),
        progress=False)
    return teacher


def test_kd_loss_fn_freezes_teacher_and_keeps_its_weights(digits_teacher):
    teacher = copy.deepcopy(digits_teacher)
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    loss_fn = kd_loss_fn(teacher, temperature=4.0, alpha=0.9)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    student = _lenet300(1)
    train = load_dataset("digits", "train")
    fit(student, train, TrainConfig(epochs=2, batch_size=64, augment=True, seed=0), loss_fn=loss_fn, progress=False)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not teacher.training


@pytest.mark.parametrize("name", list_losses())
def test_distilled_student_learns(digits_teacher, name):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    student = _lenet300(2)
    loss_fn = kd_loss_fn(copy.deepcopy(digits_teacher), temperature=3.0, alpha=0.7, loss=name)
    fit(student, train, TrainConfig(epochs=5, batch_size=64, schedule="cosine", augment=False, seed=0),
        loss_fn=loss_fn, progress=False)
    assert evaluate(student, test)["top1"] >= 0.85


def test_alpha_zero_trains_exactly_like_plain_cross_entropy(digits_teacher):
    train = load_dataset("digits", "train")
    config = TrainConfig(epochs=1, batch_size=64, augment=False, seed=3)
    plain, kd = _lenet300(4), _lenet300(4)
    fit(plain, train, config, progress=False)
    fit(kd, train, config, loss_fn=kd_loss_fn(copy.deepcopy(digits_teacher), temperature=1.0, alpha=0.0),
        progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), kd.state_dict().values()))


def test_teacher_sharing_weights_with_student_is_refused(digits_teacher):
    model = copy.deepcopy(digits_teacher)
    loss_fn = kd_loss_fn(model)
    with pytest.raises(ValueError, match="shares parameters"):
        loss_fn(model, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_class_count_mismatch_is_reported(digits_teacher):
    student = models.create("lenet300", num_classes=5, in_channels=1, input_size=(8, 8))
    loss_fn = kd_loss_fn(copy.deepcopy(digits_teacher))
    with pytest.raises(ValueError, match="same classes"):
        loss_fn(student, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_bad_arguments_are_user_errors(digits_teacher):
    with pytest.raises(UserError):
        kd_loss_fn(digits_teacher, temperature=0)
    with pytest.raises(UserError):
        kd_loss_fn(digits_teacher, alpha=2)
    with pytest.raises(UserError, match="choose from"):
        kd_loss_fn(digits_teacher, loss="nope")


def test_online_mode_updates_teacher_and_student():
    from torchslim.distill import DistillConfig, train_online

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    teacher, student = _lenet300(6), models.create("lenet300", num_classes=10, in_channels=1,
                                                   input_size=(8, 8), width_mult=0.25)
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    result = train_online(student, DistillConfig(temperature=2.0, alpha=0.5), train, teacher=teacher,
                          train_config=TrainConfig(epochs=3, batch_size=64, augment=False, seed=0), progress=False)
    assert result.history["distill"]["online"] is True
    for before, model in ((teacher_before, result.teacher), (student_before, result.model)):
        changed = [not torch.equal(before[k], v) for k, v in model.state_dict().items() if v.is_floating_point()]
        assert all(changed)
    for before, model in ((teacher_before, teacher), (student_before, student)):  # the caller's are untouched
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert evaluate(result.teacher, test)["top1"] >= 0.9 and evaluate(result.model, test)["top1"] >= 0.8
