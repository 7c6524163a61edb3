"""ShuffleNetV2's channel split and shuffle: exact permutation, traceable, shape-agnostic."""

from __future__ import annotations

import pytest
import torch
import torch.fx

from torchslim.models import create
from torchslim.models.shufflenet import ChannelShuffle, ShuffleUnit, channel_shuffle


def _channel_ids(channels: int) -> torch.Tensor:
    return torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(2, -1, 3, 5)


@pytest.mark.parametrize("channels, groups, order", [
    (6, 2, [0, 3, 1, 4, 2, 5]),
    (6, 3, [0, 2, 4, 1, 3, 5]),
    (4, 2, [0, 2, 1, 3]),
])
def test_channel_shuffle_permutation(channels, groups, order):
    out = channel_shuffle(_channel_ids(channels), groups)
    assert out.shape == (2, channels, 3, 5)
    assert out[0, :, 0, 0].tolist() == order


def test_traced_shuffle_reads_sizes_at_run_time():
    traced = torch.fx.symbolic_trace(ChannelShuffle(2))
    for channels in (4, 10, 64):
        x = _channel_ids(channels)
        assert torch.equal(traced(x), channel_shuffle(x, 2))


def test_units_keep_channels_and_downsample():
    unit = ShuffleUnit(8, 4, stride=1).eval()
    assert unit(torch.randn(2, 8, 6, 6)).shape == (2, 8, 6, 6)
    down = ShuffleUnit(8, 6, stride=2).eval()
    assert down(torch.randn(2, 8, 6, 6)).shape == (2, 12, 3, 3)


def test_stride_one_unit_passes_half_the_channels_through():
    unit = ShuffleUnit(8, 4, stride=1).eval()
    x = torch.randn(2, 8, 6, 6)
    out = unit(x)
    # After the shuffle the untouched first half sits on the even channels.
    assert torch.equal(out[:, 0::2], x[:, :4])


def test_width_scales_branches_and_keeps_channels_even():
    model = create("shufflenetv2", width_mult=0.25)
    widths = [stage[0].branch2[-3].out_channels * 2 for stage in model.stages]
    assert widths == [28, 58, 116]
