"""VGG for 32x32 inputs (CIFAR style): 3x3 conv (no bias) + BN + ReLU, 2x2 max pools, one FC.

``vgg14`` is the network of the HWGQ/BWN experiments:
(2x64C3)-MP2-(2x128C3)-MP2-(3x256C3)-MP2-(3x256C3)-MP2-(3x512C3)-MP2-FC(512->classes).
On 3x32x32 with 10 classes it has 9,414,090 parameters and 242,422,784 conv + linear MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, init_weights, scale_channels
from .registry import register_model

__all__ = ["VGG", "VGG_CONFIGS", "vgg11", "vgg14", "vgg16"]

POOL = "M"

# Output channels of each 3x3 conv, "M" for a 2x2 max pool.
VGG_CONFIGS: dict[str, tuple] = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg14": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL,
              256, 256, 256, POOL, 512, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL,
              512, 512, 512, POOL, 512, 512, 512, POOL),
}


def _features(config: tuple, in_channels: int, width_mult: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(2))
        else:
            out_channels = scale_channels(item, width_mult)
            layers += conv_bn(channels, out_channels, 3)
            channels = out_channels
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """``features`` (conv-BN-ReLU and pools), global average pool, ``classifier`` (one Linear).

    On 32x32 inputs the features end at 1x1, so the average pool is the identity there;
    it keeps the model working on larger inputs.
    """

    def __init__(self, config: tuple, num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0):
        super().__init__()
        self.features, channels = _features(config, in_channels, width_mult)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    """VGG-11 (8 convs + 1 FC) with BatchNorm."""
    return VGG(VGG_CONFIGS["vgg11"], num_classes, in_channels, width_mult)


@register_model("vgg14")
def vgg14(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    """VGG-14 (13 convs + 1 FC) with BatchNorm, as in the HWGQ/BWN experiments."""
    return VGG(VGG_CONFIGS["vgg14"], num_classes, in_channels, width_mult)


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    """VGG-16 for CIFAR (13 convs + 1 FC) with BatchNorm."""
    return VGG(VGG_CONFIGS["vgg16"], num_classes, in_channels, width_mult)
