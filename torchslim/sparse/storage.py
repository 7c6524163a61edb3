"""Sparse storage with small relative indices (Deep Compression, Han et al. 2016, sec. 2).

A pruned weight is stored in CSR (row-major) or CSC (column-major) order as a
list of entries ``(gap, value)``: ``gap`` is the number of zeros skipped since
the previous entry and fits in ``index_bits`` bits.  A run of zeros longer than
``2**index_bits - 1`` is bridged by *filler* entries holding an explicit zero,
exactly as the paper does with its 4-bit (FC) and 8-bit (conv) indices.

:func:`encode_relative` / :func:`decode_positions` work on the flat order;
:func:`encode_sparse` wraps them for a weight tensor and picks the index width
that minimises the stored bits.  :func:`to_csr` gives the classic
``(row_ptr, col_idx, values)`` triplet for kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError

ORDERS = ("csr", "csc")


def matrix_view(weight: torch.Tensor) -> torch.Tensor:
    """2-D view of a weight: rows are output units (``out x rest``)."""
    return weight.reshape(weight.shape[0], -1) if weight.ndim > 1 else weight.reshape(1, -1)


def flat_order(weight: torch.Tensor, order: str = "csr") -> torch.Tensor:
    """The weight flattened row-major (``csr``) or column-major (``csc``)."""
    if order not in ORDERS:
        raise UserError(f"unknown sparse order {order!r}; choose from: {', '.join(ORDERS)}")
    matrix = matrix_view(weight)
    return (matrix if order == "csr" else matrix.t()).reshape(-1)


def unflatten_order(flat: torch.Tensor, shape, order: str = "csr") -> torch.Tensor:
    """Inverse of :func:`flat_order`."""
    rows = shape[0] if len(shape) > 1 else 1
    cols = flat.numel() // max(rows, 1)
    matrix = flat.reshape(rows, cols) if order == "csr" else flat.reshape(cols, rows).t()
    return matrix.reshape(shape)


def encode_relative(nonzero: torch.Tensor, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative indices of the ``True`` entries of a flat boolean tensor.

    Returns ``(gaps, source)``: one row per stored entry; ``source`` is the rank of
    the non-zero the entry holds, or ``-1`` for a filler entry (an explicit zero).
    """
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be in 1..16, got {index_bits}")
    positions = torch.nonzero(nonzero.reshape(-1)).reshape(-1)
    if positions.numel() == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    previous = torch.cat([torch.tensor([-1]), positions[:-1]])
    gaps = positions - previous - 1
    span = (1 << index_bits) - 1  # largest gap one entry can express
    fillers = gaps // (span + 1)  # each filler covers `span` zeros plus itself
    per_entry = fillers + 1
    total = int(per_entry.sum())
    ends = torch.cumsum(per_entry, 0) - 1  # slot of each real entry
    out_gaps = torch.full((total,), span, dtype=torch.int64)
    out_gaps[ends] = gaps - fillers * (span + 1)
    source = torch.full((total,), -1, dtype=torch.int64)
    source[ends] = torch.arange(positions.numel())
    return out_gaps, source


def decode_positions(gaps: torch.Tensor) -> torch.Tensor:
    """Absolute flat positions of every stored entry (fillers included)."""
    return torch.cumsum(gaps.to(torch.int64) + 1, 0) - 1


def entries_for(nonzero: torch.Tensor, index_bits: int) -> int:
    """How many entries (non-zeros plus fillers) the encoding at ``index_bits`` needs."""
    positions = torch.nonzero(nonzero.reshape(-1)).reshape(-1)
    if positions.numel() == 0:
        return 0
    previous = torch.cat([torch.tensor([-1]), positions[:-1]])
    return int(positions.numel() + ((positions - previous - 1) // (1 << index_bits)).sum())


def best_index_bits(nonzero: torch.Tensor, value_bits: int, candidates=range(2, 13)) -> tuple[int, int]:
    """``(index_bits, total_bits)`` minimising ``entries * (index_bits + value_bits)``."""
    best = None
    for bits in candidates:
        total = entries_for(nonzero, bits) * (bits + value_bits)
        if best is None or total < best[1]:
            best = (bits, total)
    return best


@dataclass
class RelativeSparse:
    """A tensor in relative-index form: ``gaps`` and ``values`` have one row per entry."""

    shape: tuple
    order: str
    index_bits: int
    gaps: torch.Tensor
    values: torch.Tensor

    def to_dense(self) -> torch.Tensor:
        numel = 1
        for side in self.shape:
            numel *= side
        positions = decode_positions(self.gaps)
        if positions.numel() and int(positions[-1]) >= numel:
            raise ValueError("sparse indices run past the end of the tensor")
        flat = torch.zeros(numel, dtype=self.values.dtype)
        flat[positions] = self.values
        return unflatten_order(flat, self.shape, self.order)

    def storage_bits(self, value_bits: int = 32) -> int:
        return int(self.gaps.numel()) * (self.index_bits + value_bits)


def encode_sparse(weight: torch.Tensor, order: str = "csr", index_bits: int | None = None,
                  value_bits: int = 32) -> RelativeSparse:
    """Encode the non-zeros of ``weight``; ``index_bits=None`` picks the cheapest width."""
    flat = flat_order(weight.detach(), order)
    nonzero = flat != 0
    if index_bits is None:
        index_bits, _ = best_index_bits(nonzero, value_bits)
    gaps, source = encode_relative(nonzero, index_bits)
    values = torch.zeros(gaps.numel(), dtype=flat.dtype)
    real = source >= 0
    values[real] = flat[nonzero][source[real]]
    return RelativeSparse(tuple(weight.shape), order, index_bits, gaps, values)


def to_csr(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(row_ptr, col_idx, values)`` of the 2-D view of ``weight`` (absolute indices)."""
    matrix = matrix_view(weight.detach())
    rows, cols = torch.nonzero(matrix, as_tuple=True)
    row_ptr = torch.zeros(matrix.shape[0] + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=matrix.shape[0]), 0)
    return row_ptr, cols, matrix[rows, cols]


def from_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    rows = matrix_view(torch.empty(shape, device="meta")).shape
    counts = row_ptr[1:] - row_ptr[:-1]
    row_idx = torch.repeat_interleave(torch.arange(rows[0]), counts)
    dense = torch.zeros(rows, dtype=values.dtype)
    dense[row_idx, col_idx] = values
    return dense.reshape(shape)
