"""Small trained models shared by the back-end compression tests (cached per process)."""

import functools

import torch

from torchslim import models
from torchslim.data import load_dataset
from torchslim.train import TrainConfig, evaluate, fit


@functools.lru_cache(maxsize=None)
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@functools.lru_cache(maxsize=None)
def _trained(name: str):
    torch.manual_seed(0)
    train, _ = digits()
    model = models.create(name, num_classes=10, in_channels=1, width_mult=0.5, input_size=(8, 8))
    if name == "lenet5":
        model = models.create(name, num_classes=10, in_channels=1, width_mult=0.5, input_size=(16, 16))
    fit(model, train, TrainConfig(epochs=6, lr=0.05, batch_size=64, augment=False), progress=False)
    return model.eval()


def trained_mlp():
    """lenet300 at width 0.5 on 8x8 digits (64-150-50-10), about 0.9 top-1."""
    import copy

    return copy.deepcopy(_trained("lenet300"))


def top1(model) -> float:
    return evaluate(model, digits()[1])["top1"]
