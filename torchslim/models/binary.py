"""Networks built for binarization from the binary residual unit.

The unit is BN -> binarized activation -> 3x3 conv (-> BN), plus a shortcut (Bi-Real-Net
style, Liu et al. 2018): every binary conv sees a BatchNorm output, so HWGQ and sign
activations get the unit-Gaussian input they assume, and the real-valued shortcut
carries information the binary path loses.  Following the practical advice for binary
nets there are no 1x1 convs: a downsampling shortcut is a 2x2 average pool plus zero
channels.

The zoo builds the float form with ``nn.Hardtanh`` as the activation;
``torchslim.quant.quantize`` replaces it (``bnn``, ``xnor``, ``hwgq-bwn``...).  The stem
conv and the classifier are the first and last layers, kept float by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import init_weights, scale_channels
from .registry import register_model
from .vgg import VGG_CONFIGS

__all__ = ["BinaryResidualUnit", "BinaryResNet", "BinaryVGG", "binary_resnet20", "binary_vgg14"]


class PadShortcut(nn.Module):
    """Shortcut without 1x1 convs: average-pool by ``stride``, append zero channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.extra = out_channels - in_channels
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.pool(x), (0, 0, 0, 0, 0, self.extra))


class BinaryResidualUnit(nn.Module):
    """``[BN] -> act -> [2x2 max pool] -> conv3x3 -> BN``, plus the shortcut when ``residual``.

    ``act`` is Hardtanh until quantized.  The leading BN is left out where the previous
    unit already ends in one (the plain VGG chain); the trailing BN keeps the zoo's rule
    that every conv feeds exactly one BatchNorm (so the pruning engine can cut it).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True,
                 pre_norm: bool = True, pool: bool = False):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(in_channels) if pre_norm else None
        self.act = nn.Hardtanh()
        self.pool = nn.MaxPool2d(2) if pool else None
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut = PadShortcut(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn_in(x) if self.bn_in is not None else x)
        if self.pool is not None:
            out = self.pool(out)
        out = self.bn(self.conv(out))
        return out + self.shortcut(x) if self.shortcut is not None else out


class BinaryResNet(nn.Module):
    """Float 3x3 stem + BN, stages of binary residual units, BN-ReLU, average pool, float FC."""

    def __init__(self, stage_channels, units_per_stage, num_classes=10, in_channels=3, width_mult=1.0):
        super().__init__()
        channels = scale_channels(stage_channels[0], width_mult)
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        units = []
        for index, (width, count) in enumerate(zip(stage_channels, units_per_stage)):
            out_channels = scale_channels(width, width_mult)
            for unit in range(count):
                stride = 2 if index > 0 and unit == 0 else 1
                units.append(BinaryResidualUnit(channels, out_channels, stride))
                channels = out_channels
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem_bn(self.stem(x)))
        x = self.pool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


class BinaryVGG(nn.Module):
    """The VGG layout as a chain of units without shortcuts: conv-BN, then (act, [pool], conv, BN)..."""

    def __init__(self, config, num_classes=10, in_channels=3, width_mult=1.0):
        super().__init__()
        widths = [scale_channels(item, width_mult) if item != "M" else item for item in config]
        channels = widths[0]
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        units, pool = [], False
        for item in widths[1:]:
            if item == "M":
                pool = True
                continue
            units.append(BinaryResidualUnit(channels, item, residual=False, pre_norm=False, pool=pool))
            channels, pool = item, False
        self.units = nn.Sequential(*units)
        self.relu = nn.ReLU()
        self.last_pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem_bn(self.stem(x)))
        x = self.pool(self.last_pool(self.relu(x)))
        return self.classifier(torch.flatten(x, 1))


@register_model("binary_resnet20")
def binary_resnet20(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BinaryResNet:
    """ResNet-20 layout (16/32/64 channels) from 18 binary residual units."""
    return BinaryResNet((16, 32, 64), (6, 6, 6), num_classes, in_channels, width_mult)


@register_model("binary_vgg14")
def binary_vgg14(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BinaryVGG:
    """The vgg14 layout with BN -> act -> conv ordering for binary and HWGQ activations."""
    return BinaryVGG(VGG_CONFIGS["vgg14"], num_classes, in_channels, width_mult)
