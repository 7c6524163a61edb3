"""Bit-packing of small integer codes into bytes.

Codes are packed little-endian inside each byte, least significant bit first,
so ``bits=1`` stores eight codes per byte, ``bits=2`` four, and any ``bits`` in
1..32 is accepted (codes straddle byte boundaries when 8 is not a multiple of
``bits``).  The packed length is always ``ceil(count * bits / 8)`` bytes.

Helpers for the two special alphabets of binary and ternary networks:
``pack_signs`` ({-1, +1} -> 1 bit) and ``pack_ternary`` ({-1, 0, +1} -> 2 bits).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "bits_for",
    "pack_codes",
    "packed_nbytes",
    "unpack_codes",
    "pack_signs",
    "unpack_signs",
    "pack_ternary",
    "unpack_ternary",
]


def bits_for(num_values: int) -> int:
    """Bits needed to index ``num_values`` distinct values (at least 1)."""
    return max(1, int(num_values - 1).bit_length())


def packed_nbytes(count: int, bits: int) -> int:
    return (int(count) * int(bits) + 7) // 8


def _as_numpy(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    return np.ascontiguousarray(codes).reshape(-1)


def pack_codes(codes, bits: int) -> torch.Tensor:
    """Pack non-negative integers ``< 2**bits`` into a flat uint8 tensor."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    flat = _as_numpy(codes).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) to fit {bits} bits")
    if bits == 8:
        return torch.from_numpy(flat.astype(np.uint8))
    planes = ((flat[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_codes(data, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``count`` codes as an int64 tensor."""
    raw = _as_numpy(data).astype(np.uint8)
    if raw.size < packed_nbytes(count, bits):
        raise ValueError(f"packed data holds {raw.size} bytes, {packed_nbytes(count, bits)} needed")
    if bits == 8:
        return torch.from_numpy(raw[:count].astype(np.int64))
    planes = np.unpackbits(raw, bitorder="little", count=count * bits).reshape(count, bits).astype(np.int64)
    return torch.from_numpy((planes << np.arange(bits, dtype=np.int64)).sum(axis=1))


def pack_signs(values) -> torch.Tensor:
    """{-1, +1} (or any sign pattern; zero counts as +1) -> 1 bit each, 1 meaning -1."""
    flat = torch.as_tensor(_as_numpy(values))
    return pack_codes((flat < 0).to(torch.int64), 1)


def unpack_signs(data, count: int, dtype=torch.float32) -> torch.Tensor:
    return (1 - 2 * unpack_codes(data, 1, count)).to(dtype)


def pack_ternary(values) -> torch.Tensor:
    """{-1, 0, +1} -> 2 bits each (0 -> 0, +1 -> 1, -1 -> 2)."""
    flat = torch.as_tensor(_as_numpy(values))
    if flat.numel() and not bool(((flat == 0) | (flat == 1) | (flat == -1)).all()):
        raise ValueError("ternary values must be -1, 0 or +1")
    codes = torch.where(flat < 0, 2, flat.to(torch.int64))
    return pack_codes(codes, 2)


def unpack_ternary(data, count: int, dtype=torch.float32) -> torch.Tensor:
    codes = unpack_codes(data, 2, count)
    if codes.numel() and int(codes.max()) > 2:
        raise ValueError("corrupt ternary data (code 3)")
    return torch.where(codes == 2, -1, codes).to(dtype)
