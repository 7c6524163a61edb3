import pytest
import torch

from torchslim.sparse.storage import (best_index_bits, decode_positions, encode_relative, encode_sparse,
                                      entries_for, from_csr, to_csr)


def _sparse(shape, density, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    return weight * (torch.rand(shape, generator=generator) < density)


@pytest.mark.parametrize("order", ["csr", "csc"])
@pytest.mark.parametrize("index_bits", [1, 3, 4, 8, None])
@pytest.mark.parametrize("shape", [(40, 30), (8, 4, 3, 3), (257,)])
def test_relative_storage_re_expands_exactly(order, index_bits, shape):
    weight = _sparse(shape, 0.1)
    sparse = encode_sparse(weight, order, index_bits)
    assert torch.equal(sparse.to_dense(), weight)
    assert sparse.gaps.max() < (1 << sparse.index_bits)


def test_long_zero_runs_get_filler_entries():
    flat = torch.zeros(100, dtype=torch.bool)
    flat[[0, 40, 99]] = True
    gaps, source = encode_relative(flat, 3)  # max gap 7: runs of 39 and 58 zeros need fillers
    assert int((source < 0).sum()) == 39 // 8 + 58 // 8
    positions = decode_positions(gaps)
    assert positions[source >= 0].tolist() == [0, 40, 99]
    assert entries_for(flat, 3) == gaps.numel()


def test_best_index_bits_minimises_the_storage():
    nonzero = _sparse((100, 100), 0.05, seed=1).reshape(-1) != 0
    bits, total = best_index_bits(nonzero, 5)
    assert all(total <= entries_for(nonzero, b) * (b + 5) for b in range(2, 13))
    assert 3 <= bits <= 7  # about 20 zeros between non-zeros at 5% density


def test_csr_triplet_round_trip():
    weight = _sparse((6, 2, 3, 3), 0.3, seed=2)
    row_ptr, cols, values = to_csr(weight)
    assert row_ptr[-1] == int((weight != 0).sum()) == values.numel()
    assert torch.equal(from_csr(row_ptr, cols, values, weight.shape), weight)
