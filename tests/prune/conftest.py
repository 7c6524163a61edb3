import functools

import pytest
import torch
from torch import nn

from torchslim import models

from ..conftest import single_thread

WIDTH = {"lenet5": 1.0, "lenet300": 0.25, "lenet": 1.0}


def build(name: str, seed: int = 0, width: float | None = None) -> nn.Module:
    """A small zoo model with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = models.create(name, num_classes=10, width_mult=width or WIDTH.get(name, 0.125))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@functools.lru_cache(maxsize=None)
def calibration(name: str, batch: int = 8):
    shape = models.model_input_shape(name)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return [(x, y)]


_one_thread = pytest.fixture(autouse=True)(single_thread)
