"""Shallow convolutional students: ``shallow2`` and ``shallow3``.

Two or three conv-BN-ReLU-maxpool stages, a global average pool and one linear
layer: the "shallow nets" distillation trains as students.  They are
shape-agnostic (any input of at least 4x4 for ``shallow2``, 8x8 for
``shallow3``), cheap on a CPU, and trace with ``torch.fx``.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, init_weights, scale_channels
from .registry import register_model

__all__ = ["ShallowNet", "shallow2", "shallow3"]


class ShallowNet(nn.Module):
    """``len(channels)`` stages of 3x3 conv-BN-ReLU then 2x2 max-pool; global average pool; linear."""

    def __init__(self, channels: tuple[int, ...], num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for base in channels:
            out = scale_channels(base, width_mult)
            layers += conv_bn(previous, out, 3)
            layers.append(nn.MaxPool2d(2))
            previous = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("shallow2")
def shallow2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ShallowNet:
    """Two stages, 32 and 64 channels at width 1."""
    return ShallowNet((32, 64), num_classes, in_channels, width_mult)


@register_model("shallow3")
def shallow3(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ShallowNet:
    """Three stages, 32, 64 and 128 channels at width 1."""
    return ShallowNet((32, 64, 128), num_classes, in_channels, width_mult)
