"""Built-in packers: plain and sparse float layers, codebook and PQ layers, frozen
quantized layers (1-bit signs, 2-bit ternary, k-bit codes plus per-channel scales).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..codebook import huffman
from ..codebook.modules import CodebookConv2d, CodebookLinear, PQConv2d, PQLinear
from ..quant.modules import FrozenConv2d, FrozenLinear
from ..sparse.storage import (RelativeSparse, best_index_bits, decode_positions, encode_relative, encode_sparse,
                              flat_order, unflatten_order)
from .bitpack import bits_for, pack_codes, pack_signs, pack_ternary, unpack_codes, unpack_signs, unpack_ternary
from .registry import own_state, register_packer

# ---------------------------------------------------------------- code streams

HUFFMAN_OVERHEAD = 24  # bytes: a Huffman stream's extra field record and meta in the compressed header


def _pack_lengths(lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Huffman code lengths, trailing unused symbols dropped, at the fewest bits that hold the longest."""
    used = int(torch.nonzero(lengths).max()) + 1
    length_bits = bits_for(int(lengths.max()) + 1)
    return pack_codes(lengths[:used].to(torch.int64), length_bits), {"symbols": used, "length_bits": length_bits}


def _unpack_lengths(table: torch.Tensor, meta: dict) -> torch.Tensor:
    if not 1 <= meta["symbols"] <= 1 << meta["bits"]:
        raise ValueError("the Huffman table does not fit the stream's alphabet")
    return unpack_codes(table, meta["length_bits"], meta["symbols"])


def pack_stream(name: str, symbols: torch.Tensor, bits: int, use_huffman: bool) -> tuple[dict, dict]:
    """Integers in ``[0, 2**bits)`` as a fixed-width stream, or Huffman-coded when smaller."""
    symbols = symbols.reshape(-1).to(torch.int64)
    fixed = pack_codes(symbols, bits)
    meta = {"bits": bits, "count": int(symbols.numel()), "huffman": False}
    if use_huffman and symbols.numel():
        stream, lengths = huffman.encode(symbols.numpy(), 1 << bits)
        table, table_meta = _pack_lengths(lengths)
        if stream.numel() + table.numel() + HUFFMAN_OVERHEAD < fixed.numel():
            meta.update(huffman=True, **table_meta)
            return {f"{name}.huff": stream, f"{name}.lengths": table}, meta
    return {name: fixed}, meta


def unpack_stream(name: str, tensors: dict, meta: dict) -> torch.Tensor:
    if meta["huffman"]:
        lengths = _unpack_lengths(tensors[f"{name}.lengths"], meta)
        return huffman.decode(tensors[f"{name}.huff"].numpy(), lengths.numpy(), meta["count"])
    return unpack_codes(tensors[name], meta["bits"], meta["count"])


def stream_bytes(tensors: dict) -> int:
    return sum(int(t.numel()) * t.element_size() for t in tensors.values())


def _sparse_code_streams(flat: torch.Tensor, nonzero: torch.Tensor, index_bits: int, value_bits: int,
                         use_huffman: bool) -> tuple[dict, dict]:
    gaps, source = encode_relative(nonzero, index_bits)
    values = torch.zeros(gaps.numel(), dtype=torch.int64)
    real = source >= 0
    values[real] = flat[nonzero][source[real]]
    tensors, gap_meta = pack_stream("gaps", gaps, index_bits, use_huffman)
    more, value_meta = pack_stream("values", values, value_bits, use_huffman)
    tensors.update(more)
    return tensors, {"gaps": gap_meta, "values": value_meta}


def pack_sparse_codes(codes: torch.Tensor, value_bits: int, use_huffman: bool) -> tuple[dict, dict]:
    """Relative-index (CSR order) entries of the non-zero codes of a tensor: gaps plus codes.

    The index width minimises the fixed-width bits; with Huffman coding every width
    is tried and the one whose coded streams are smallest wins (wider gaps need
    fewer filler entries, and the entropy code absorbs the wider alphabet).
    """
    flat = flat_order(codes, "csr").to(torch.int64)
    nonzero = flat != 0
    index_bits, _ = best_index_bits(nonzero, value_bits)
    best = _sparse_code_streams(flat, nonzero, index_bits, value_bits, use_huffman)
    if use_huffman:
        for bits in range(2, 13):
            if bits != index_bits:
                candidate = _sparse_code_streams(flat, nonzero, bits, value_bits, True)
                if stream_bytes(candidate[0]) < stream_bytes(best[0]):
                    best = candidate
    tensors, meta = best
    return tensors, {"shape": list(codes.shape), **meta}


def unpack_sparse_codes(tensors: dict, meta: dict) -> torch.Tensor:
    gaps = unpack_stream("gaps", tensors, meta["gaps"])
    values = unpack_stream("values", tensors, meta["values"])
    numel = math.prod(meta["shape"])
    positions = decode_positions(gaps)
    if gaps.numel() != values.numel() or (positions.numel() and int(positions[-1]) >= numel):
        raise ValueError("sparse entries do not fit the tensor")
    flat = torch.zeros(numel, dtype=torch.int64)
    flat[positions] = values
    return unflatten_order(flat, meta["shape"], "csr")


def _sparse_is_smaller(codes: torch.Tensor, value_bits: int, dense_bits: int) -> bool:
    nonzero = flat_order(codes, "csr") != 0
    if bool(nonzero.all()):
        return False
    return best_index_bits(nonzero, value_bits)[1] < codes.numel() * dense_bits


def _prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _strip(prefix: str, tensors: dict) -> dict:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _rest(module, skip) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in own_state(module).items() if k not in skip}


# ---------------------------------------------------------------- float layers (dense or sparse)


def _pack_float_layer(module, options):
    weight = module.weight.detach().cpu()
    tensors, meta = _rest(module, {"weight"}), {"shape": list(weight.shape), "sparse": False}
    if options.sparse and weight.dtype == torch.float32 and _sparse_is_smaller(weight, 32, 32):
        sparse = encode_sparse(weight, "csr", value_bits=32)
        gap_tensors, gap_meta = pack_stream("gaps", sparse.gaps, sparse.index_bits, options.huffman)
        tensors.update(_prefixed("weight", gap_tensors))
        tensors["weight.values"] = sparse.values.contiguous()  # one per entry, fillers hold 0
        meta.update(sparse=True, gaps=gap_meta)
        return tensors, meta
    tensors["weight"] = weight.contiguous()
    return tensors, meta


def _unpack_float_layer(module, tensors, meta):
    state = {k: v for k, v in tensors.items() if not k.startswith("weight")}
    if not meta["sparse"]:
        state["weight"] = tensors["weight"]
        return state
    gaps = unpack_stream("gaps", _strip("weight", tensors), meta["gaps"])
    values = tensors["weight.values"]
    if values.numel() != gaps.numel():
        raise ValueError("sparse value count differs from the index")
    sparse = RelativeSparse(tuple(meta["shape"]), "csr", meta["gaps"]["bits"], gaps, values)
    state["weight"] = sparse.to_dense()
    return state


for _type in (nn.Linear, nn.Conv1d, nn.Conv2d):
    register_packer(_type, _pack_float_layer, _unpack_float_layer, name=f"nn.{_type.__name__}")

# ---------------------------------------------------------------- scalar codebook layers


def _pack_codebook(module, options):
    tensors = _rest(module, {"codes"})
    codes = module.codes.detach().cpu().to(torch.int64)
    bits = bits_for(module.table_size)
    if module.zero_code and _sparse_is_smaller(codes, bits, bits):
        more, meta = pack_sparse_codes(codes, bits, options.huffman)
        tensors.update(_prefixed("codes", more))
        return tensors, {"sparse": True, "codes": meta}
    more, meta = pack_stream("codes", codes, bits, options.huffman)
    tensors.update(more)
    return tensors, {"sparse": False, "codes": meta, "shape": list(codes.shape)}


def _unpack_codebook(module, tensors, meta):
    state = {k: v for k, v in tensors.items() if not k.startswith("codes")}
    if meta["sparse"]:
        codes = unpack_sparse_codes(_strip("codes", tensors), meta["codes"])
    else:
        codes = unpack_stream("codes", tensors, meta["codes"]).reshape(meta["shape"])
    if codes.numel() and int(codes.max()) >= module.table_size:
        raise ValueError("a code points past the codebook")
    state["codes"] = codes.to(module.codes.dtype)
    return state


for _type in (CodebookLinear, CodebookConv2d):
    register_packer(_type, _pack_codebook, _unpack_codebook)

# ---------------------------------------------------------------- product-quantized layers


def _pack_pq(module, options):
    tensors = _rest(module, {"codes"})
    more, meta = pack_stream("codes", module.codes.detach().cpu(), bits_for(module.codewords), options.huffman)
    tensors.update(more)
    return tensors, {"codes": meta, "shape": list(module.codes.shape)}


def _unpack_pq(module, tensors, meta):
    state = {k: v for k, v in tensors.items() if not k.startswith("codes")}
    codes = unpack_stream("codes", tensors, meta["codes"]).reshape(meta["shape"])
    if codes.numel() and int(codes.max()) >= module.codewords:
        raise ValueError("a code points past the codebook")
    state["codes"] = codes.to(module.codes.dtype)
    return state


for _type in (PQLinear, PQConv2d):
    register_packer(_type, _pack_pq, _unpack_pq)

# ---------------------------------------------------------------- frozen quantized layers (torchslim.quant)


def pack_int_codes(codes: torch.Tensor, use_huffman: bool = False) -> tuple[dict, dict]:
    """Signed integer codes: 1 bit for {-1, +1}, 2 bits for {-1, 0, +1}, else k bits above the minimum."""
    flat = codes.detach().cpu().reshape(-1).to(torch.int64)
    meta = {"shape": list(codes.shape), "count": int(flat.numel())}
    present = set(torch.unique(flat).tolist())
    if present <= {-1, 1}:
        return {"signs": pack_signs(flat)}, {**meta, "alphabet": "sign"}
    if present <= {-1, 0, 1}:
        return {"ternary": pack_ternary(flat)}, {**meta, "alphabet": "ternary"}
    low = int(flat.min())
    tensors, stream = pack_stream("kbit", flat - low, bits_for(int(flat.max()) - low + 1), use_huffman)
    return tensors, {**meta, "alphabet": "kbit", "offset": low, "stream": stream}


def unpack_int_codes(tensors: dict, meta: dict) -> torch.Tensor:
    count = meta["count"]
    if meta["alphabet"] == "sign":
        flat = unpack_signs(tensors["signs"], count, torch.int64)
    elif meta["alphabet"] == "ternary":
        flat = unpack_ternary(tensors["ternary"], count, torch.int64)
    else:
        flat = unpack_stream("kbit", tensors, meta["stream"]) + meta["offset"]
    return flat.reshape(meta["shape"])


_SIDE = ("scale", "bias")


def _encode_side(values: torch.Tensor, dtype: str) -> tuple[torch.Tensor, float | None]:
    """Per-channel floats as ``dtype``; int8 is symmetric with one float32 step per tensor."""
    if dtype != "int8":
        return values.to(getattr(torch, dtype)).contiguous(), None
    step = float(values.abs().max().float() / 127) or 1.0
    return torch.round(values.float() / step).clamp(-127, 127).to(torch.int8), step


def _pack_frozen(module, options):
    tensors = _rest(module, {"codes", *_SIDE})
    more, meta = pack_int_codes(module.codes, options.huffman)
    tensors.update(_prefixed("codes", more))
    layer_meta = {"codes": meta}
    for leaf in _SIDE:
        value = getattr(module, leaf, None)
        if value is None:
            continue
        tensors[leaf], step = _encode_side(value.detach().cpu(), options.side_dtype)
        if step is not None:
            layer_meta[f"{leaf}_step"] = step
    return tensors, layer_meta


def _unpack_frozen(module, tensors, meta):
    state = {k: v for k, v in tensors.items() if not k.startswith("codes.")}
    state["codes"] = unpack_int_codes(_strip("codes", tensors), meta["codes"]).to(module.codes.dtype)
    for leaf in _SIDE:
        if f"{leaf}_step" in meta:
            state[leaf] = state[leaf].float() * torch.tensor(meta[f"{leaf}_step"], dtype=torch.float32)
    return state


def _register_quant_packers() -> None:
    for frozen in (FrozenConv2d, FrozenLinear):
        register_packer(frozen, _pack_frozen, _unpack_frozen)


_register_quant_packers()
