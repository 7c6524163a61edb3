"""Packed deployment files for frozen low-bit models: codes at 1, 2, 4 or 8 bits per weight.

Layout (one safetensors file, no pickle):

* ``<layer>.codes.values``: int8, the distinct code values of the layer, ascending
  (``[-1, 1]`` for binary, ``[-1, 0, 1]`` for ternary);
* ``<layer>.codes.packed``: uint8, the index of each weight's code in ``values`` at
  ``bits`` = 1, 2, 4 or 8 bits per weight, packed most-significant-first, in the
  weight's C order (out, in, kh, kw);
* ``<layer>.scale`` and ``<layer>.bias``: one float per output channel;
* every other tensor of the model (float first/last layers, BatchNorm, activation
  levels and thresholds) as in :func:`torchslim.save`.

Floats are stored as ``float_dtype``: float32 by default (the packed model computes
what the frozen model computes), or float16 to shave the per-channel data.  With ``fold_bn`` (the default) each BatchNorm that directly follows a
frozen layer is folded into that layer's scale and bias first, so a binary conv is
``popcount-style integer product * scale + bias``: the form bit-serial kernels use.
The JSON header is the :func:`torchslim.save` header plus a ``packed`` record per
layer (shape and bits).  :func:`load_packed` rebuilds the frozen model.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_write_bytes
from ..io.serialize import HEADER_KEY, _state_tensors, build_from_header, build_header, read_header
from .modules import FrozenConv2d, FrozenLinear, symbolic_trace

__all__ = ["pack_indices", "unpack_indices", "fold_batchnorm", "save_packed", "load_packed", "packed_size"]

FLOAT_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _index_bits(count: int) -> int:
    needed = max(1, math.ceil(math.log2(max(count, 2))))
    return next(b for b in (1, 2, 4, 8) if b >= needed)


def pack_indices(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integers in ``[0, 2**bits)`` into uint8, ``8 // bits`` per byte, first value in the high bits."""
    flat = indices.reshape(-1).to(torch.uint8).numpy()
    per_byte = 8 // bits
    padded = np.zeros(math.ceil(flat.size / per_byte) * per_byte, dtype=np.uint8)
    padded[: flat.size] = flat
    groups = padded.reshape(-1, per_byte)
    shifts = np.array([bits * (per_byte - 1 - i) for i in range(per_byte)], dtype=np.uint8)
    return torch.from_numpy(np.bitwise_or.reduce(groups << shifts, axis=1).astype(np.uint8))


def unpack_indices(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: the first ``count`` integers, as int64."""
    per_byte = 8 // bits
    shifts = np.array([bits * (per_byte - 1 - i) for i in range(per_byte)], dtype=np.uint8)
    values = (packed.numpy()[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return torch.from_numpy(values.reshape(-1)[:count].astype(np.int64))


def _bn_after_frozen(model: nn.Module) -> list[tuple[str, str]]:
    graph_module = symbolic_trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d | nn.BatchNorm1d):
            continue
        source = node.args[0]
        if getattr(source, "op", None) == "call_module" and len(source.users) == 1 \
                and isinstance(modules[source.target], FrozenConv2d | FrozenLinear):
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with each BatchNorm that follows a frozen layer folded into its scale and bias."""
    folded = copy.deepcopy(model).eval()
    for layer_name, bn_name in _bn_after_frozen(folded):
        layer, bn = folded.get_submodule(layer_name), folded.get_submodule(bn_name)
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * gain
        if layer.bias is not None:
            bias = bias + layer.bias * gain
        replacement = type(layer)(**{**layer.get_config(), "bias": True})
        replacement.load_codes(layer.codes, layer.scale * gain, bias)
        parent, _, child = layer_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, child, replacement)
        parent, _, child = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, child, nn.Identity())
    return folded


def _packed_payload(model: nn.Module, float_dtype: torch.dtype):
    tensors, records = {}, {}
    frozen = {name: m for name, m in model.named_modules() if isinstance(m, FrozenConv2d | FrozenLinear)}
    for key, value in _state_tensors(model).items():
        owner, _, leaf = key.rpartition(".")
        if owner in frozen and leaf == "codes":
            values, indices = torch.unique(value, sorted=True, return_inverse=True)
            bits = _index_bits(len(values))
            tensors[f"{owner}.codes.values"] = values.to(torch.int8)
            tensors[f"{owner}.codes.packed"] = pack_indices(indices, bits)
            records[owner] = {"shape": list(value.shape), "bits": bits}
        elif value.is_floating_point():
            tensors[key] = value.to(float_dtype).contiguous()
        else:
            tensors[key] = value
    return tensors, records


def save_packed(model: nn.Module, path, float_dtype: str = "float32", fold_bn: bool = True, **meta) -> int:
    """Write a frozen model as a packed file (atomically); returns its size in bytes."""
    from safetensors.torch import save as st_save

    if float_dtype not in FLOAT_DTYPES:
        raise UserError(f"unknown float dtype {float_dtype!r} for packing; choose float16 or float32")
    if not any(isinstance(m, FrozenConv2d | FrozenLinear) for m in model.modules()):
        raise UserError("save_packed needs a frozen model: call torchslim.quant.freeze first")
    if fold_bn:
        model = fold_batchnorm(model)
    tensors, records = _packed_payload(model, FLOAT_DTYPES[float_dtype])
    header = build_header(model, **meta)
    header["packed"] = {"layers": records, "float_dtype": float_dtype, "bn_folded": bool(fold_bn)}
    data = st_save(tensors, metadata={HEADER_KEY: json.dumps(header)})
    atomic_write_bytes(path, data)
    return len(data)


def packed_size(model: nn.Module, **kwargs) -> int:
    """Bytes :func:`save_packed` writes for ``model``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return save_packed(model, os.path.join(folder, "model.safetensors"), **kwargs)


def load_packed(path) -> nn.Module:
    """Rebuild the frozen (float32) model from a packed file, in eval mode."""
    from safetensors.torch import load_file

    header = read_header(path)
    if "packed" not in header:
        raise UserError(f"{path} is not a packed file; load it with torchslim.load")
    model = build_from_header(header)
    tensors = load_file(os.fspath(path))
    state = {}
    for owner, record in header["packed"]["layers"].items():
        values = tensors.pop(f"{owner}.codes.values")
        count = math.prod(record["shape"])
        indices = unpack_indices(tensors.pop(f"{owner}.codes.packed"), record["bits"], count)
        state[f"{owner}.codes"] = values[indices].reshape(record["shape"])
    reference = model.state_dict()
    for key, value in tensors.items():
        state[key] = value.to(reference[key].dtype) if key in reference else value
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
