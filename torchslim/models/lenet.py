"""LeNet family for 28x28 digits: ``lenet5`` (convolutional), ``lenet5-caffe`` (the wider
20-50-500 variant of Caffe's example, the LeNet-5 of the Deep Compression paper) and
``lenet300`` (MLP).

Both depend on the spatial input size, so their builders take ``input_size=(H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .layers import init_weights, scale_channels
from .registry import register_model

__all__ = ["LeNet5", "LeNet300", "lenet5", "lenet5_caffe", "lenet300"]


def _lenet5_feature_size(input_size: tuple[int, int], padding: int) -> tuple[int, int]:
    """Spatial size after conv5(pad)-pool2-conv5(no pad)-pool2."""
    sizes = tuple(((side + 2 * padding - 4) // 2 - 4) // 2 for side in input_size)
    if min(sizes) < 1:
        raise UserError(f"lenet5 needs an input of at least {16 - 2 * padding}x{16 - 2 * padding}, "
                        f"got {tuple(input_size)}")
    return sizes


class LeNet5(nn.Module):
    """conv(6,5x5)-BN-ReLU-pool, conv(16,5x5)-BN-ReLU-pool, FC 120-BN-ReLU, FC 84-BN-ReLU, FC.

    ``convs``, ``hidden`` and ``padding`` (of the first conv) give the other members
    of the family: Caffe's 20-50-500 is ``convs=(20, 50), hidden=(500,), padding=0``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 input_size: tuple[int, int] = (28, 28), convs: tuple[int, int] = (6, 16),
                 hidden: tuple[int, ...] = (120, 84), padding: int = 2):
        super().__init__()
        conv1, conv2 = (scale_channels(c, width_mult) for c in convs)
        height, width = _lenet5_feature_size(input_size, padding)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, conv1, 5, padding=padding, bias=False),
            nn.BatchNorm2d(conv1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(conv1, conv2, 5, bias=False),
            nn.BatchNorm2d(conv2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        layers, features = [], conv2 * height * width
        for size in (scale_channels(h, width_mult) for h in hidden):
            layers += [nn.Linear(features, size), nn.BatchNorm1d(size), nn.ReLU()]
            features = size
        self.classifier = nn.Sequential(*layers, nn.Linear(features, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class LeNet300(nn.Module):
    """MLP 784-300-100-classes with BatchNorm1d; flattens any input shape."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 input_size: tuple[int, int] = (28, 28)):
        super().__init__()
        in_features = in_channels * input_size[0] * input_size[1]
        hidden1, hidden2 = scale_channels(300, width_mult), scale_channels(100, width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(in_features, hidden1),
            nn.BatchNorm1d(hidden1),
            nn.ReLU(),
            nn.Linear(hidden1, hidden2),
            nn.BatchNorm1d(hidden2),
            nn.ReLU(),
            nn.Linear(hidden2, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


@register_model("lenet5", input_shape=(1, 28, 28))
def lenet5(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
           input_size: tuple[int, int] = (28, 28)) -> LeNet5:
    """LeNet-5 with BatchNorm (62,136 params at width 1 on 1x28x28)."""
    return LeNet5(num_classes, in_channels, width_mult, tuple(input_size))


@register_model("lenet5-caffe", input_shape=(1, 28, 28))
def lenet5_caffe(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 input_size: tuple[int, int] = (28, 28)) -> LeNet5:
    """Caffe's LeNet (conv 20, conv 50, FC 500; 430,500 weights plus biases), with BatchNorm: the model of
    Deep Compression's LeNet-5 row."""
    return LeNet5(num_classes, in_channels, width_mult, tuple(input_size), convs=(20, 50), hidden=(500,), padding=0)


@register_model("lenet300", input_shape=(1, 28, 28))
def lenet300(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
             input_size: tuple[int, int] = (28, 28)) -> LeNet300:
    """LeNet-300-100 MLP with BatchNorm1d."""
    return LeNet300(num_classes, in_channels, width_mult, tuple(input_size))
