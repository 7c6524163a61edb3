"""Packed deployment files for frozen low-bit models: codes at 1, 2, 4 or 8 bits per weight.

Layout (one safetensors file, no pickle; ``layout`` 2):

* ``binary.codes``: uint8, every frozen layer's weights in turn (each starting on a byte):
  the index of each weight's code in that layer's ``values`` (ascending distinct codes,
  ``[-1, 1]`` for binary, ``[-1, 0, 1]`` for ternary, kept in the header) at ``bits`` = 1, 2,
  4 or 8 bits per weight, packed most-significant-first, in the weight's C order (out, in, kh, kw);
* ``binary.scale`` and ``binary.bias``: one number per output channel of every frozen layer,
  concatenated in the same order;
* ``float``: every other floating tensor of the model (float first/last layers, BatchNorm,
  activation levels and thresholds) flattened and concatenated, their names and shapes in the
  header; integer tensors as in :func:`torchslim.save`.

A handful of tensors instead of a few per layer keep the file's tensor index short, and the
JSON header (the :func:`torchslim.save` header plus the ``packed`` records) is stored
zlib-compressed beside ``{"packed": {"layout": 2}}``: on a VGG14 the header shrinks from 15 kB to
about 2 kB.
Floats are stored as ``float_dtype``: float32 by default (the packed model computes
what the frozen model computes), or float16.  ``side_dtype`` (default: ``float_dtype``) stores the
per-channel scale and bias alone as float32, float16 or int8 (symmetric, one float32 step
per layer and tensor, kept in the header): the float first and last layers stay as they are.
With ``fold_bn`` (the default) each BatchNorm that directly follows a
frozen layer is folded into that layer's scale and bias first, so a binary conv is
``popcount-style integer product * scale + bias``: the form bit-serial kernels use.
The JSON header is the :func:`torchslim.save` header plus a ``packed`` record per
layer (shape, bits, code values, int8 steps).  :func:`load_packed` rebuilds the frozen model,
and still reads the first layout (one ``codes.packed``/``codes.values`` pair per layer).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import zlib

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_write_bytes
from ..io.serialize import HEADER_KEY, _state_tensors, build_from_header, build_header, read_header
from .modules import FrozenConv2d, FrozenLinear, symbolic_trace

__all__ = ["pack_indices", "unpack_indices", "fold_batchnorm", "save_packed", "load_packed", "packed_size"]

FLOAT_DTYPES = {"float16": torch.float16, "float32": torch.float32}
SIDE_DTYPES = (*FLOAT_DTYPES, "int8")
LAYOUT = 2  # all binary layers' codes, scales and biases in three concatenated tensors


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


def _encode_side(values: torch.Tensor, dtype: str) -> tuple[torch.Tensor, float | None]:
    """Per-channel floats as ``dtype``; int8 is symmetric with one float32 step per tensor."""
    if dtype != "int8":
        return values.to(FLOAT_DTYPES[dtype]).contiguous(), None
    step = float((values.abs().max() / 127).float()) or 1.0
    return torch.round(values.float() / step).clamp(-127, 127).to(torch.int8), step


def _decode_side(values: torch.Tensor, step: float | None) -> torch.Tensor:
    return values.float() if step is None else values.float() * torch.tensor(step, dtype=torch.float32)


def _packed_payload(model: nn.Module, float_dtype: str, side_dtype: str):
    """Tensors and per-layer records: every binary layer's codes, scales and biases concatenated."""
    tensors, records, blobs = {}, {}, {"codes": [], "scale": [], "bias": []}
    frozen = {name: m for name, m in model.named_modules() if isinstance(m, FrozenConv2d | FrozenLinear)}
    for name, layer in frozen.items():
        values, indices = torch.unique(layer.codes, sorted=True, return_inverse=True)
        bits = _index_bits(len(values))
        blobs["codes"].append(pack_indices(indices, bits))
        record = {"shape": list(layer.codes.shape), "bits": bits, "values": values.tolist(),
                  "bias": layer.bias is not None}
        for leaf in ("scale", "bias") if record["bias"] else ("scale",):
            encoded, step = _encode_side(getattr(layer, leaf).detach(), side_dtype)
            blobs[leaf].append(encoded)
            if step is not None:
                record[f"{leaf}_step"] = step
        records[name] = record
    floats = {}
    for key, value in _state_tensors(model).items():
        if key.rpartition(".")[0] in frozen:
            continue
        if value.is_floating_point():
            floats[key] = list(value.shape)
            blobs.setdefault("float", []).append(value.reshape(-1).to(FLOAT_DTYPES[float_dtype]))
        else:
            tensors[key] = value
    for leaf, parts in blobs.items():
        if parts:
            tensors[f"binary.{leaf}" if leaf != "float" else "float"] = torch.cat(parts)
    return tensors, records, floats


def save_packed(model: nn.Module, path, float_dtype: str = "float32", fold_bn: bool = True,
                side_dtype: str | None = None, **meta) -> int:
    """Write a frozen model as a packed file (atomically); returns its size in bytes.

    ``side_dtype`` stores the binary layers' per-channel scale and bias (default: ``float_dtype``;
    ``int8`` keeps one float32 step per layer and tensor: smaller, not exact).
    """
    from safetensors.torch import save as st_save

    side_dtype = side_dtype or float_dtype
    if float_dtype not in FLOAT_DTYPES or side_dtype not in SIDE_DTYPES:
        raise UserError(f"unknown dtype {float_dtype!r}/{side_dtype!r} for packing; choose float16 or float32 "
                        f"(and int8 for the per-channel side data)")
    if not any(isinstance(m, FrozenConv2d | FrozenLinear) for m in model.modules()):
        raise UserError("save_packed needs a frozen model: call torchslim.quant.freeze first")
    if fold_bn:
        model = fold_batchnorm(model)
    tensors, records, floats = _packed_payload(model, float_dtype, side_dtype)
    header = build_header(model, **meta)
    header["packed"] = {"layout": LAYOUT, "layers": records, "floats": floats, "float_dtype": float_dtype,
                        "side_dtype": side_dtype, "bn_folded": bool(fold_bn)}
    text = json.dumps(header, separators=(",", ":")).encode()
    compact = {"packed": {"layout": LAYOUT}, "zlib": base64.b64encode(zlib.compress(text, 9)).decode("ascii")}
    data = st_save(tensors, metadata={HEADER_KEY: json.dumps(compact, separators=(",", ":"))})
    atomic_write_bytes(path, data)
    return len(data)


def packed_size(model: nn.Module, **kwargs) -> int:
    """Bytes :func:`save_packed` writes for ``model``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return save_packed(model, os.path.join(folder, "model.safetensors"), **kwargs)


def _binary_state(header: dict, tensors: dict) -> dict:
    """The frozen layers' ``codes``, ``scale`` and ``bias`` from the concatenated tensors."""
    state, offsets = {}, {"codes": 0, "scale": 0, "bias": 0}

    def take(leaf, count):
        part = tensors[f"binary.{leaf}"][offsets[leaf]: offsets[leaf] + count]
        offsets[leaf] += count
        return part

    for owner, record in header["packed"]["layers"].items():
        count, channels = math.prod(record["shape"]), record["shape"][0]
        indices = unpack_indices(take("codes", math.ceil(count * record["bits"] / 8)), record["bits"], count)
        values = torch.tensor(record["values"], dtype=torch.int8)
        state[f"{owner}.codes"] = values[indices].reshape(record["shape"])
        for leaf in ("scale", "bias") if record["bias"] else ("scale",):
            state[f"{owner}.{leaf}"] = _decode_side(take(leaf, channels), record.get(f"{leaf}_step"))
    for leaf in offsets:
        tensors.pop(f"binary.{leaf}", None)
    start, flat = 0, tensors.pop("float", torch.zeros(0))
    for key, shape in header["packed"]["floats"].items():
        count = math.prod(shape)
        state[key] = flat[start: start + count].reshape(shape)
        start += count
    return state


def _binary_state_v1(header: dict, tensors: dict) -> dict:
    """Files written before the concatenated layout: one codes/values pair per layer."""
    state = {}
    for owner, record in header["packed"]["layers"].items():
        values = tensors.pop(f"{owner}.codes.values")
        count = math.prod(record["shape"])
        indices = unpack_indices(tensors.pop(f"{owner}.codes.packed"), record["bits"], count)
        state[f"{owner}.codes"] = values[indices].reshape(record["shape"])
    return state


def load_packed(path) -> nn.Module:
    """Rebuild the frozen (float32) model from a packed file, in eval mode."""
    from safetensors.torch import load_file

    header = read_header(path)
    if "packed" not in header:
        raise UserError(f"{path} is not a packed file; load it with torchslim.load")
    if "zlib" in header:
        header = json.loads(zlib.decompress(base64.b64decode(header["zlib"])))
    model = build_from_header(header)
    tensors = load_file(os.fspath(path))
    unpack = _binary_state if header["packed"].get("layout") == LAYOUT else _binary_state_v1
    state = unpack(header, tensors)
    state.update(tensors)
    reference = model.state_dict()
    for key, value in list(state.items()):
        state[key] = value.to(reference[key].dtype) if key in reference else value
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
