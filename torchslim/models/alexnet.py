"""AlexNet for 32x32 inputs: five convs with BN, three 2x2 max pools, and a classifier of
three FC layers (dropout, BN1d) as in Krizhevsky et al. 2012, shrunk for CIFAR-sized images.

    conv5x5 64 - MP2 - conv5x5 192 - MP2 - conv3x3 384 - conv3x3 256 - conv3x3 256 - MP2
    - (4x4 pool) - dropout - FC 1024 - BN - ReLU - dropout - FC 1024 - BN - ReLU - FC classes
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, init_weights, scale_channels
from .registry import register_model

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    """``features`` (5 conv-BN-ReLU, 3 pools), adaptive pool to 4x4, ``classifier`` (3 FC)."""

    POOLED_SIZE = 4

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        c1, c2, c3, c4, c5 = (scale_channels(c, width_mult) for c in (64, 192, 384, 256, 256))
        hidden = scale_channels(1024, width_mult)
        self.features = nn.Sequential(
            *conv_bn(in_channels, c1, 5),
            nn.MaxPool2d(2),
            *conv_bn(c1, c2, 5),
            nn.MaxPool2d(2),
            *conv_bn(c2, c3, 3),
            *conv_bn(c3, c4, 3),
            *conv_bn(c4, c5, 3),
            nn.MaxPool2d(2),
        )
        # The identity on 32x32 inputs (features end at 4x4); other sizes still fit the FC.
        self.pool = nn.AdaptiveAvgPool2d(self.POOLED_SIZE)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(c5 * self.POOLED_SIZE ** 2, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model("alexnet")
def alexnet(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> AlexNet:
    """AlexNet, 32x32 variant with BatchNorm."""
    return AlexNet(num_classes, in_channels, width_mult)
