import math

import pytest
import torch

from torchslim.export.bitpack import (bits_for, pack_codes, pack_signs, pack_ternary, packed_nbytes, unpack_codes,
                                      unpack_signs, unpack_ternary)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 11, 16])
@pytest.mark.parametrize("count", [0, 1, 9, 1000])
def test_codes_round_trip_and_size(bits, count):
    codes = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(count * bits / 8) == packed_nbytes(count, bits)
    assert torch.equal(unpack_codes(packed, bits, count), codes)


def test_out_of_range_codes_are_refused():
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError):
        unpack_codes(torch.zeros(1, dtype=torch.uint8), 4, 3)


def test_signs_take_one_bit():
    values = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0])
    packed = pack_signs(values)
    assert packed.numel() == 2
    assert torch.equal(unpack_signs(packed, 9), values)


def test_ternary_takes_two_bits():
    values = torch.tensor([0, 1, -1, 0, -1, 1, 1], dtype=torch.float32)
    packed = pack_ternary(values)
    assert packed.numel() == 2
    assert torch.equal(unpack_ternary(packed, 7), values)
    with pytest.raises(ValueError):
        pack_ternary(torch.tensor([2.0]))


def test_bits_for():
    assert [bits_for(n) for n in (1, 2, 3, 4, 5, 16, 17, 256, 257)] == [1, 1, 2, 2, 3, 4, 5, 8, 9]
