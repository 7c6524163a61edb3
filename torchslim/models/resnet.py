"""ResNets for 32x32 inputs: ``resnet20`` and ``resnet56`` (He et al. 2016, CIFAR section)
and a CIFAR-style ``resnet18`` (3x3 stem, no max pool).

Downsampling shortcuts are 1x1 conv + BN ("option B"), so every residual add joins two
BN outputs and the channels of a stage can be pruned together.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights, scale_channels
from .registry import register_model

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet20", "resnet56"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, stages of BasicBlocks (the first of each later stage has stride 2),
    global average pool, FC."""

    def __init__(self, stage_channels: tuple[int, ...], blocks_per_stage: tuple[int, ...],
                 stem_channels: int, num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0):
        super().__init__()
        channels = scale_channels(stem_channels, width_mult)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        stages = []
        for index, (width, blocks) in enumerate(zip(stage_channels, blocks_per_stage)):
            out_channels = scale_channels(width, width_mult)
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(blocks):
                stage.append(BasicBlock(channels, out_channels, stride if block == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-20: 3 stages of 3 BasicBlocks, 16/32/64 channels."""
    return ResNet((16, 32, 64), (3, 3, 3), 16, num_classes, in_channels, width_mult)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-56: 3 stages of 9 BasicBlocks, 16/32/64 channels."""
    return ResNet((16, 32, 64), (9, 9, 9), 16, num_classes, in_channels, width_mult)


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-18, CIFAR style: 3x3 stem with 64 channels, no max pool, 64/128/256/512."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), 64, num_classes, in_channels, width_mult)
