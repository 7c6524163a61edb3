"""Canonical Huffman coding of small-integer streams (codes, sparse index gaps).

Deep Compression's last stage: the distributions of the weight codes and of the
relative indices are far from uniform, so an entropy code saves a further
20-30%.  The stream is stored as the code length of every symbol (one byte
each, lengths capped at ``MAX_LENGTH``) plus the bit stream; decoding rebuilds
the canonical code from the lengths alone.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

MAX_LENGTH = 24


def code_lengths(counts) -> np.ndarray:
    """Huffman code length of each symbol (0 for unused), capped at ``MAX_LENGTH``."""
    counts = np.asarray(counts, dtype=np.float64)
    used = np.flatnonzero(counts > 0)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    weights = counts.copy()
    while used.size:
        heap = [(weights[s], int(s), (int(s),)) for s in used]
        heapq.heapify(heap)
        lengths[:] = 0
        while len(heap) > 1:
            w1, t1, members1 = heapq.heappop(heap)
            w2, t2, members2 = heapq.heappop(heap)
            for s in members1 + members2:
                lengths[s] += 1
            heapq.heappush(heap, (w1 + w2, min(t1, t2), members1 + members2))
        if lengths.max() <= MAX_LENGTH:
            break
        weights[used] = np.maximum(weights[used] // 2, 1)  # flatten the distribution and retry
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for the given lengths (symbols ordered by length, then value)."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        codes[symbol] = code
        code += 1
        previous = int(lengths[symbol])
    return codes


def encode(symbols, num_symbols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bitstream uint8, lengths uint8[num_symbols])`` for a stream of ints in ``[0, num_symbols)``."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    lengths = code_lengths(np.bincount(symbols, minlength=num_symbols))
    codes = canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    total = int(sym_len.sum())
    starts = np.cumsum(sym_len) - sym_len
    bits = np.zeros(total, dtype=np.uint8)
    for shift in range(int(sym_len.max()) if symbols.size else 0):
        has = sym_len > shift  # bit `shift` counted from the most significant end
        bits[starts[has] + shift] = (sym_code[has] >> (sym_len[has] - 1 - shift)) & 1
    return torch.from_numpy(np.packbits(bits)), torch.from_numpy(lengths.astype(np.uint8))


def decode(stream, lengths, count: int) -> torch.Tensor:
    """Inverse of :func:`encode`: ``count`` symbols as int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    if lengths.max() > MAX_LENGTH or not lengths.any():
        raise ValueError("corrupt Huffman table")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    table_symbol = np.full(1 << width, -1, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = width - int(lengths[symbol])
        start = int(codes[symbol]) << shift
        table_symbol[start:start + (1 << shift)] = symbol
    bits = np.unpackbits(np.asarray(stream, dtype=np.uint8))
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    # window[i]: the `width` bits starting at bit i, as an integer
    window = np.zeros(bits.size + 1, dtype=np.int64)
    for k in range(width):
        window = (window << 1) | padded[k:k + bits.size + 1]
    out = np.empty(count, dtype=np.int64)
    position, limit = 0, bits.size
    table_length = lengths
    for i in range(count):
        if position >= limit:
            raise ValueError("Huffman stream ends early")
        symbol = table_symbol[window[position]]
        if symbol < 0:
            raise ValueError("corrupt Huffman stream")
        out[i] = symbol
        position += table_length[symbol]
    if position > limit:
        raise ValueError("Huffman stream ends early")
    return torch.from_numpy(out)
