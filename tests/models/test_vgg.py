"""Exact size of vgg14, the network of the HWGQ/BWN experiments."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchslim.models import create
from torchslim.models.vgg import POOL, VGG_CONFIGS

aten = torch.ops.aten


def _macs(model: nn.Module, input_shape) -> tuple[int, int]:
    """(conv MACs, linear MACs) for one sample, from FlopCounterMode (MACs = flops / 2)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, *input_shape))
    flops = counter.get_flop_counts()["Global"]
    linear = flops.get(aten.addmm, 0) + flops.get(aten.mm, 0)
    return flops[aten.convolution] // 2, linear // 2


def _hand_count(config, in_channels=3, side=32, classes=10):
    """Params and conv MACs from the layer list: 3x3 convs without bias, BN (2 per channel)."""
    params = macs = 0
    for item in config:
        if item == POOL:
            side //= 2
            continue
        params += 9 * in_channels * item + 2 * item
        macs += 9 * in_channels * item * side * side
        in_channels = item
    return params + in_channels * classes + classes, macs


def test_vgg14_layout():
    model = create("vgg14")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128] + [256] * 6 + [512] * 3
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]


def test_vgg14_params_and_macs_are_exact():
    model = create("vgg14")
    assert sum(p.numel() for p in model.parameters()) == 9_414_090
    conv, linear = _macs(model, (3, 32, 32))
    # 32x32: (1,728 + 36,864) * 1,024   =  39,518,208
    # 16x16: (73,728 + 147,456) * 256   =  56,623,104
    #   8x8: (294,912 + 2 * 589,824) * 64 = 94,371,840
    #   4x4: 3 * 589,824 * 16           =  28,311,552
    #   2x2: (1,179,648 + 2 * 2,359,296) * 4 = 23,592,960
    assert conv == 242_417_664
    assert linear == 5_120
    assert conv + linear == 242_422_784
    assert _hand_count(VGG_CONFIGS["vgg14"]) == (9_414_090, 242_417_664)


def test_vgg14_quarter_width():
    model = create("vgg14", width_mult=0.25)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 16, 32, 32] + [64] * 6 + [128] * 3
    assert sum(p.numel() for p in model.parameters()) == 590_970
    conv, linear = _macs(model, (3, 32, 32))
    assert (conv, linear) == (15_482_880, 1_280)


def test_vgg_family_matches_hand_count():
    for name in ("vgg11", "vgg14", "vgg16"):
        model = create(name)
        params, conv_macs = _hand_count(VGG_CONFIGS[name])
        assert sum(p.numel() for p in model.parameters()) == params
        assert _macs(model, (3, 32, 32)) == (conv_macs, 5_120)
