"""MobileNetV2 for 32x32 inputs (Sandler et al. 2018, CIFAR variant).

Differences from the ImageNet network: the stem has stride 1 and the second stage
(24 channels) keeps stride 1, so a 32x32 input ends at 4x4 before the global pool.
Channels are scaled with ``int(round(c * width_mult))``, without rounding to multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, init_weights, scale_channels
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, repeats n, stride of the first repeat s)
MOBILENETV2_CONFIG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """[1x1 expand-BN-ReLU6] -> 3x3 depthwise-BN-ReLU6 -> 1x1 project-BN, plus the input
    when the stride is 1 and the channel counts match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += conv_bn(in_channels, hidden, 1, activation=nn.ReLU6)
        layers += conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6)
        layers += conv_bn(hidden, out_channels, 1, activation=None)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv3x3 (stride 1), inverted residual stages, 1x1 conv to 1280, pool,
    dropout 0.2, FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        channels = scale_channels(32, width_mult)
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(in_channels, channels, 3,
                                                          activation=nn.ReLU6))]
        for expansion, width, repeats, stride in MOBILENETV2_CONFIG:
            out_channels = scale_channels(width, width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out_channels,
                                               stride if index == 0 else 1, expansion))
                channels = out_channels
        last_channels = scale_channels(1280, width_mult)
        layers.append(nn.Sequential(*conv_bn(channels, last_channels, 1, activation=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3,
                width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2, CIFAR variant (stride-1 stem, 32x32 -> 4x4)."""
    return MobileNetV2(num_classes, in_channels, width_mult)
