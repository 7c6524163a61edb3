import pytest
import torch

from torchslim import models
from torchslim.data import load_dataset
from torchslim.errors import UserError
from torchslim.train import TrainConfig, evaluate, fit
from torchslim.train.config import lr_factor
from tests.conftest import needs_fashion_mnist

QUICK = dict(batch_size=64, lr=0.05, schedule="cosine", augment=False)


def _digits_model(seed=0):
    torch.manual_seed(seed)
    return models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_config_rejects_bad_values():
    with pytest.raises(UserError, match="choose from"):
        TrainConfig(optimizer="sgdd")
    with pytest.raises(UserError, match="did you mean 'cosine'"):
        TrainConfig(schedule="cosin")
    with pytest.raises(UserError):
        TrainConfig(lr=0)
    with pytest.raises(UserError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})
    assert TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()) == TrainConfig(epochs=3)


def test_schedules_start_end_and_step():
    cos = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(cos, 0, 10) == 1.0 and lr_factor(cos, 100, 10) == pytest.approx(0.0)
    one = TrainConfig(epochs=10, schedule="onecycle")
    assert lr_factor(one, 0, 10) < 0.1 and lr_factor(one, 15, 10) == pytest.approx(1.0)
    step = TrainConfig(epochs=10, schedule="step", step_size=3, gamma=0.1)
    assert lr_factor(step, 29, 10) == 1.0 and lr_factor(step, 30, 10) == pytest.approx(0.1)


def test_fit_learns_digits_and_is_deterministic():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    config = TrainConfig(epochs=8, seed=1, **QUICK)
    a, b = _digits_model(), _digits_model()
    fit(a, train, config, progress=False)
    fit(b, train, config, progress=False)
    assert _same_weights(a, b)
    metrics = evaluate(a, test)
    assert metrics["top1"] >= 0.9 and metrics["top5"] >= metrics["top1"] and metrics["n"] == len(test.labels)


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    train = load_dataset("digits", "train")
    config = TrainConfig(epochs=3, seed=2, batch_size=64, augment=True)
    reference = _digits_model()
    history = fit(reference, train, config, checkpoint_path=tmp_path / "ref.ckpt", progress=False)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]

    steps = {"n": 0}

    def crash_in_second_epoch(_model):
        steps["n"] += 1
        if steps["n"] == len(train.labels) // 64 + 3:
            raise KeyboardInterrupt

    interrupted = _digits_model()
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, train, config, checkpoint_path=tmp_path / "run.ckpt", on_step=crash_in_second_epoch,
            progress=False)
    resumed = _digits_model(seed=99)  # weights come from the checkpoint, not from here
    history = fit(resumed, train, config, checkpoint_path=tmp_path / "run.ckpt", progress=False)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert _same_weights(reference, resumed)


def test_adam_and_step_schedule_train():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = _digits_model()
    fit(model, train, TrainConfig(epochs=5, optimizer="adam", lr=2e-3, schedule="step", step_size=3,
                                  batch_size=64, augment=False), progress=False)
    assert evaluate(model, test)["top1"] >= 0.85


@needs_fashion_mnist
def test_lenet5_reaches_085_on_fashion_mnist_in_one_epoch():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    torch.manual_seed(0)
    model = models.create("lenet5")
    fit(model, train, TrainConfig(epochs=1, batch_size=128, lr=0.05, augment=False), progress=False)
    assert evaluate(model, test)["top1"] >= 0.85


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path):
    train = load_dataset("digits", "train")
    fit(_digits_model(), train, TrainConfig(epochs=1, **QUICK), checkpoint_path=tmp_path / "c.ckpt", progress=False)
    with pytest.raises(UserError, match="belongs to another run .*settings"):
        fit(_digits_model(), train, TrainConfig(epochs=2, **QUICK), checkpoint_path=tmp_path / "c.ckpt",
            progress=False)
