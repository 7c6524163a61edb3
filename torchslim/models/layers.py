"""Building blocks shared by the model families.

Every block is made of plain ``nn`` modules (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU``...)
so that the pruning engine can trace and cut them and the quantizer can swap them.
Each activation is its own module object, never shared, and never ``inplace``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["scale_channels", "conv_bn", "init_weights"]


def scale_channels(channels: int, width_mult: float) -> int:
    """``channels`` scaled by ``width_mult``: ``max(1, int(round(channels * width_mult)))``.

    No rounding to multiples of 8: width 0.25 of 64 channels is 16, of 6 channels is 2.
    """
    return max(1, int(round(channels * width_mult)))


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
            groups: int = 1, activation: type[nn.Module] | None = nn.ReLU) -> list[nn.Module]:
    """``Conv2d`` (bias-free, "same" padding) + ``BatchNorm2d`` [+ a fresh activation]."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation())
    return layers


def init_weights(model: nn.Module) -> nn.Module:
    """The standard initialisation, in place; returns ``model``.

    Conv: Kaiming normal (fan_out, relu), bias 0.  BatchNorm: weight 1, bias 0.
    Linear: normal(0, 0.01), bias 0.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    return model
