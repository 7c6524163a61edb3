"""ShuffleNetV2 for 32x32 inputs (Ma et al. 2018, CIFAR variant: stride-1 3x3 stem, no max pool).

The channel split (``torch.chunk``), the concat and the channel shuffle read their sizes
from the tensor at run time, so the forward traces with ``torch.fx`` and keeps working after
channels are pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, init_weights, scale_channels
from .registry import register_model

__all__ = ["ChannelShuffle", "ShuffleUnit", "ShuffleNetV2", "channel_shuffle", "shufflenetv2"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel groups: (N, g*k, H, W) -> view (N, g, k, H, W) ->
    transpose -> (N, k*g, H, W).  Sizes come from ``x.shape``."""
    shape = x.shape
    x = x.reshape(shape[0], groups, shape[1] // groups, shape[2], shape[3])
    x = x.transpose(1, 2)
    return x.reshape(shape[0], shape[1], shape[2], shape[3])


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle` (no parameters)."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def _branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1-BN-ReLU, 3x3 depthwise (stride)-BN, 1x1-BN-ReLU."""
    return nn.Sequential(
        *conv_bn(in_channels, out_channels, 1),
        *conv_bn(out_channels, out_channels, 3, stride=stride, groups=out_channels, activation=None),
        *conv_bn(out_channels, out_channels, 1),
    )


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit.

    Stride 1: split the channels in two halves, keep the first, transform the second, concat,
    shuffle.  Stride 2: both branches see the whole input and downsample, concat, shuffle.
    """

    def __init__(self, in_channels: int, branch_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.branch1 = None
            self.branch2 = _branch(in_channels // 2, branch_channels, 1)
        else:
            self.branch1 = nn.Sequential(
                *conv_bn(in_channels, in_channels, 3, stride=stride, groups=in_channels,
                         activation=None),
                *conv_bn(in_channels, branch_channels, 1),
            )
            self.branch2 = _branch(in_channels, branch_channels, stride)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            kept, transformed = torch.chunk(x, 2, dim=1)
            out = torch.cat([kept, self.branch2(transformed)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    """Stem conv3x3 (stride 1), three stages of ShuffleUnits (the first unit of each has
    stride 2), 1x1 conv, global average pool, FC."""

    # Channels of the 1.0x network: stem, three stages, last conv; units per stage.
    STAGE_CHANNELS = (116, 232, 464)
    STAGE_UNITS = (4, 8, 4)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        channels = scale_channels(24, width_mult)
        self.stem = nn.Sequential(*conv_bn(in_channels, channels, 3))
        stages = []
        for width, units in zip(self.STAGE_CHANNELS, self.STAGE_UNITS):
            branch_channels = scale_channels(width // 2, width_mult)
            stage = [ShuffleUnit(channels, branch_channels, 2)]
            channels = 2 * branch_channels
            stage += [ShuffleUnit(channels, branch_channels, 1) for _ in range(units - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        last_channels = scale_channels(1024, width_mult)
        self.conv_last = nn.Sequential(*conv_bn(channels, last_channels, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.conv_last(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x layout (116/232/464, last conv 1024), CIFAR variant."""
    return ShuffleNetV2(num_classes, in_channels, width_mult)
