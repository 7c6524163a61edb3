"""Networks of binary convolutions each wrapped in a real-valued shortcut (Bi-Real-Net / ReActNet).

The unit, around every 3x3 conv but the float stem:

    x -> BN (its shift is RSign's learnable threshold) -> act -> conv3x3 -> BN
      (+ shortcut(x): x itself, average-pooled by the stride, zero channels appended to the width)
      -> RPReLU (per-channel shift, PReLU, shift)

Liu et al., "Bi-Real Net", ECCV 2018 (a real shortcut around every binary conv); Liu et al.,
"ReActNet", ECCV 2020 (RSign, RPReLU).  The float form uses ``nn.Hardtanh`` as ``act``;
``torchslim.quant.quantize(model, QuantConfig(method="bireal"))`` turns it into the sign of
its input and the conv into 1-bit weights (``hwgq-zero-uniform-bwn`` into 2-bit levels), so
only the conv is binary; the input BN folds into the conv's packing, the output BN, the add
and RPReLU stay float (a few per-element operations per unit, see :func:`float_ops`).  The
shortcut adds no parameters (the zoo's ``PadShortcut``: no 1x1 conv, which binarizes worst).
"""

from __future__ import annotations

import torch
from torch import nn

from .binary import PadShortcut
from .layers import init_weights, scale_channels
from .registry import register_model
from .vgg import POOL, VGG_CONFIGS

__all__ = ["BiRealUnit", "BiRealVGG", "BiRealResNet", "LearnableBias", "RPReLU", "bireal_vgg14",
           "bireal_resnet18", "float_ops", "init_from_float"]


class LearnableBias(nn.Module):
    """``x + bias`` per channel: in front of a sign it is the learnable threshold of ReActNet's RSign."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)
        self.bias = nn.Parameter(torch.zeros(1, self.channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` with per-channel ``gamma``, slope and ``zeta``."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=0.25)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))


class BiRealUnit(nn.Module):
    """``RPReLU(BN(conv3x3(act(norm(x)))) + shortcut(x))``; ``act`` is Hardtanh until quantized.

    ``norm`` is a BatchNorm: in front of a sign its shift is RSign's learnable threshold (set
    from the data's statistics), in front of 2-bit HWGQ levels it gives the unit-Gaussian
    input they assume; either way ``compile`` folds it into the binary conv's input packing.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = nn.Hardtanh()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut = PadShortcut(in_channels, out_channels, stride)
        self.rprelu = RPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(self.act(self.norm(x))))
        return self.rprelu(out + self.shortcut(x))


class _Stem(nn.Sequential):
    """The float first conv + BN (no activation: the first unit's BN and sign follow)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


class BiRealVGG(nn.Module):
    """The VGG layout: float stem conv, then a unit for every other conv, max pools between (float values)."""

    def __init__(self, config: tuple, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        widths = [item if item == POOL else scale_channels(item, width_mult) for item in config]
        channels = widths[0]
        layers: list[nn.Module] = [_Stem(in_channels, channels)]
        for item in widths[1:]:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(BiRealUnit(channels, item))
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BiRealResNet(nn.Module):
    """The CIFAR ResNet-18 layout (Bi-Real-18): float stem, two units per basic block, stride 2 where a
    stage begins; every 3x3 conv has its own real shortcut."""

    def __init__(self, stage_channels, blocks_per_stage, num_classes=10, in_channels=3, width_mult=1.0):
        super().__init__()
        channels = scale_channels(stage_channels[0], width_mult)
        units: list[nn.Module] = []
        for index, (width, blocks) in enumerate(zip(stage_channels, blocks_per_stage)):
            out_channels = scale_channels(width, width_mult)
            for unit in range(2 * blocks):
                units.append(BiRealUnit(channels, out_channels, 2 if index > 0 and unit == 0 else 1))
                channels = out_channels
        self.stem = _Stem(in_channels, scale_channels(stage_channels[0], width_mult))
        self.units = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.units(self.stem(x))), 1))


def float_ops(model: nn.Module, input_shape=(1, 3, 32, 32)) -> dict:
    """Per-element float operations the units add around their binary convs, for one input.

    Counted per input element: the input BN (1; once folded, it is the packing's compare) and,
    on a strided unit, the average-pool shortcut (1).  Per output element: the output BN (a
    multiply and an add: 2), the shortcut add (1) and RPReLU (2 adds, a compare and a multiply:
    4).  Returns the total and the binary conv MACs beside it.
    """
    counts = {"float_ops": 0, "binary_macs": 0}

    def hook(unit, inputs, output):
        n, c, h, w = inputs[0].shape
        out = output[0].numel()
        pooled = inputs[0][0].numel() if isinstance(unit.shortcut.pool, nn.AvgPool2d) else 0
        counts["float_ops"] += c * h * w + out * (2 + 1 + 4) + pooled
        counts["binary_macs"] += out * unit.conv.in_channels * 9

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, BiRealUnit)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return counts


@register_model("bireal_vgg14")
def bireal_vgg14(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BiRealVGG:
    """The vgg14 layout (13 convs + FC) with a real shortcut, input BN and RPReLU around 12 binary convs."""
    return BiRealVGG(VGG_CONFIGS["vgg14"], num_classes, in_channels, width_mult)


@register_model("bireal_resnet18")
def bireal_resnet18(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BiRealResNet:
    """Bi-Real-18 for 32x32 inputs: 3x3 stem, 16 units of 64/128/256/512 channels."""
    return BiRealResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels, width_mult)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(3x3 conv, the BatchNorm right after it in module order) pairs, in order."""
    pairs, last = [], None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
        elif isinstance(module, nn.BatchNorm2d) and last is not None:
            if tuple(last.kernel_size) == (3, 3) and last.out_channels == module.num_features:
                pairs.append((last, module))
            last = None
    return pairs


@torch.no_grad()
def init_from_float(target: nn.Module, source: nn.Module) -> int:
    """Copy the 3x3 conv + BN weights and the classifier of a float net (``vgg14``, ``resnet18``)
    into the matching layers of its ``bireal_*`` counterpart, in place; returns the pairs copied.

    Layers pair up in order while their shapes agree (resnet18's 1x1 shortcut convs have no
    counterpart and are skipped): the float net's weights are a better start than random for
    the latent binary weights.
    """
    copied = 0
    for (conv_t, bn_t), (conv_s, bn_s) in zip(_conv_bn_pairs(target), _conv_bn_pairs(source)):
        if conv_t.weight.shape != conv_s.weight.shape:
            break
        conv_t.weight.copy_(conv_s.weight)
        bn_t.load_state_dict(bn_s.state_dict())
        copied += 1
    last_t, last_s = [[m for m in model.modules() if isinstance(m, nn.Linear)][-1] for model in (target, source)]
    if last_t.weight.shape == last_s.weight.shape:
        last_t.load_state_dict(last_s.state_dict())
    return copied
