"""The packed container: one safetensors file holding a compressed model at its real size.

Layout (packed format 2):

* each layer type's packer (:mod:`torchslim.export.registry`) turns a module's
  own state into named fields: bit-packed signs, ternary and k-bit codes,
  codebooks, relative sparse indices plus values, per-channel scales, and the
  plain state of the other layers;
* every field is stored in the narrowest dtype that holds it exactly, and the
  fields of one stored dtype are concatenated into a single tensor named by that
  dtype (``u8``, ``f16``, ``f32``, ...) (:mod:`torchslim.export.compact`);
* tensor ``header`` (uint8): the SHA-256 of the header JSON (32 bytes), then the
  JSON, zlib-compressed.  The JSON holds the model header of
  :func:`torchslim.save` with the architecture stored as its difference from the
  zoo model and only its plain notes (``top1``, ``data``: the stage records of
  how it was made, such as training configs, stay in its ``torchslim.save`` file),
  the packer names once, one ``[path, packer index, meta, fields]``
  record per module (a field is ``[name, stored dtype, shape, original dtype]``,
  in storage order), the element count of every dtype tensor, and one SHA-256
  over those tensors (names, dtypes, shapes, bytes);
* metadata ``torchslim.packed``: the format number; ``torchslim.sha256``: the SHA-256 of
  the whole file (:mod:`torchslim.io.container`), so no byte can change unnoticed, the
  safetensors JSON and its padding included (files written before it lack this entry
  and are checked by the two inner checksums only).

:func:`load_packed` refuses a file whose length differs from what its header
declares (truncated or padded), whose header or any tensor fails its checksum,
whose fields do not exactly fill its tensors, or whose decoded state does not fit
the architecture: a damaged file is never loaded as a wrong model.  Files of the
older format 1 are refused with a message saying to export them again.
The model is decoded against its meta-device skeleton and built only once every shape
fits.  :func:`torchslim.load` dispatches here by itself.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import zlib

import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_write_bytes
from ..io.formats import LoadFormat, register_load_format
from ..io.container import is_sealed, placeholder_metadata, read_container, seal, verify
from ..io.serialize import (build_from_header, build_header, check_state_shapes, checked_skeleton,
                            source_model, state_metadata)
from ..io.spec import describe_modules
from ..quant.modules import FrozenConv2d, FrozenLinear
from ..quant.packed import fold_frozen_batchnorm
from .compact import BlobReader, BlobWriter, expand_modules, modules_delta
from .registry import PackOptions, find_packer, packer_by_name

PACKED_KEY = "torchslim.packed"
PACKED_FORMAT = 2
HEADER_TENSOR = "header"
_DIGEST_BYTES = 32
_MAX_HEADER_TEXT = 1 << 28


def _digest(tensors: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fresh_description(arch: dict, trust=()) -> list:
    return describe_modules(source_model(arch, trust, meta=True))


def _compact_model_header(model: nn.Module, meta: dict) -> dict:
    header = build_header(model, **meta)
    header["modules"] = modules_delta(header["modules"], _fresh_description(header["arch"]))
    header["meta"] = {key: value for key, value in header["meta"].items() if not isinstance(value, (dict, list))}
    return header


def _fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """The model with each BatchNorm after a frozen low-bit layer folded into it (a copy), or itself."""
    if not any(isinstance(m, FrozenConv2d | FrozenLinear) for m in model.modules()):
        return model
    return fold_frozen_batchnorm(model)


def pack_model(model: nn.Module, options: PackOptions | None = None, **meta) -> bytes:
    """The bytes of the packed file for ``model``."""
    from safetensors.torch import save as st_save  # lazy: safetensors loads on the first read or write

    from . import packers  # noqa: F401  # lazy: the built-in packers register on first use

    options = options or PackOptions()
    if options.fold_bn:
        model = _fold_frozen_batchnorm(model)
    writer, records, packer_names = BlobWriter(), [], []
    for path, module in model.named_modules():
        packer = find_packer(module)
        fields, layer_meta = packer.pack(module, options)
        if not fields and not layer_meta:
            continue
        if packer.name not in packer_names:
            packer_names.append(packer.name)
        if options.float_dtype == "float16":  # lossy by request: every float32 field at half precision
            fields = {k: v.half() if v.dtype == torch.float32 else v for k, v in fields.items()}
        stored = [writer.add(field, fields[field]) for field in sorted(fields)]
        records.append([path, packer_names.index(packer.name), layer_meta, stored])
    blobs = writer.blobs()
    header = {
        "format": PACKED_FORMAT,
        "model": _compact_model_header(model, meta),
        "packers": packer_names,
        "layers": records,
        "blobs": {key: int(blob.numel()) for key, blob in sorted(blobs.items())},
        "data_sha256": _digest(blobs),
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = hashlib.sha256(text).digest() + zlib.compress(text, 9)
    blobs[HEADER_TENSOR] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
    return seal(st_save(blobs, metadata={PACKED_KEY: str(PACKED_FORMAT), **placeholder_metadata()}))


def save_packed(model: nn.Module, path, options: PackOptions | None = None, **meta) -> int:
    """Write ``model`` packed to ``path`` (atomically); returns the file size in bytes."""
    data = pack_model(model, options, **meta)
    atomic_write_bytes(path, data)
    return len(data)


def packed_size(model: nn.Module, options: PackOptions | None = None) -> int:
    """Bytes :func:`save_packed` would write for ``model``."""
    return len(pack_model(model, options))


def is_packed(path) -> bool:
    """True when ``path`` looks like a packed container (header only; nothing is verified)."""
    try:
        return PACKED_KEY in read_container(path).metadata
    except UserError:
        return False


def _check_format(path, value) -> None:
    if value == str(PACKED_FORMAT):
        return
    if isinstance(value, str) and value.isdigit() and int(value) > PACKED_FORMAT:
        raise UserError(f"{path} was written by a newer torchslim (packed format {value})")
    raise UserError(f"{path} is in an older packed format that this torchslim no longer reads; "
                    f"export it again from the saved model (torchslim export --format packed)")


def _header_bytes(path, entry: dict) -> bytes:
    try:
        start, end = (int(v) for v in entry["data_offsets"])
        if entry["dtype"] != "U8" or end - start <= _DIGEST_BYTES:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is corrupt: its header tensor is malformed") from None
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + length + start)
        return handle.read(end - start)


def read_packed_header(path, trust=()) -> dict:
    """The verified JSON header of a packed file (raises UserError when damaged).

    Files sealed with a whole-file checksum are checked against it; the ones written before
    it carry only the header and tensor checksums.
    """
    path = os.fspath(path)
    container = read_container(path)
    metadata = container.metadata
    if PACKED_KEY not in metadata:
        raise UserError(f"{path} is not a packed torchslim file")
    if is_sealed(container):
        verify(container)
    _check_format(path, metadata[PACKED_KEY])
    header = json.loads(container.header_bytes)
    if HEADER_TENSOR not in header:
        raise UserError(f"{path} is corrupt: it has no {HEADER_TENSOR!r} tensor")
    head = _header_bytes(path, header[HEADER_TENSOR])
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(head[_DIGEST_BYTES:], _MAX_HEADER_TEXT)
        if inflater.unconsumed_tail:
            raise UserError(f"{path} is corrupt: its header inflates past {_MAX_HEADER_TEXT} bytes")
    except zlib.error:
        raise UserError(f"{path} is corrupt: its header cannot be decoded") from None
    if hashlib.sha256(text).digest() != head[:_DIGEST_BYTES]:
        raise UserError(f"{path} is corrupt: its header fails the checksum")
    try:
        packed = json.loads(text)
        packed["model"]["modules"] = expand_modules(packed["model"]["modules"],
                                                    _fresh_description(packed["model"]["arch"], trust))
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is corrupt: its header does not describe a model") from None
    return packed


def _verified_blobs(path, packed: dict) -> dict:
    from safetensors import SafetensorError  # lazy: safetensors loads on the first read or write
    from safetensors.torch import load_file  # lazy: safetensors loads on the first read or write

    try:
        tensors = load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
    tensors.pop(HEADER_TENSOR, None)
    counts = {key: int(tensor.numel()) for key, tensor in tensors.items()}
    if counts != packed["blobs"]:
        raise UserError(f"{path} is corrupt: its tensors differ from the ones its header lists")
    if _digest(tensors) != packed["data_sha256"]:
        raise UserError(f"{path} is corrupt: its weights fail the checksum")
    return tensors


def _decoded_state(path, model: nn.Module, packed: dict, blobs: dict) -> dict:
    reader, state = BlobReader(blobs), {}
    for layer_path, packer_index, layer_meta, fields in packed["layers"]:
        packer_name = packed["packers"][packer_index]
        packer = packer_by_name(packer_name)
        if packer is None:
            raise UserError(f"{path} needs the layer packer {packer_name!r}, which this torchslim lacks")
        module = model.get_submodule(layer_path) if layer_path else model
        own = dict(reader.take(field) for field in fields)
        prefix = f"{layer_path}." if layer_path else ""
        for key, value in packer.unpack(module, own, layer_meta).items():
            state[prefix + key] = value
    reader.check_used()
    return state


def _check_field_sizes(path, skeleton: nn.Module, packed: dict) -> None:
    """No field may decode to more elements than its layer's largest tensor (checked before decoding)."""
    for layer_path, _, layer_meta, _ in packed["layers"]:
        module = skeleton.get_submodule(layer_path) if layer_path else skeleton
        limit = max((t.numel() for t in module.state_dict().values()), default=0)
        stack = [layer_meta]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
                sizes = [item.get("count", 0), math.prod(item.get("shape") or [0])]
                if any(not isinstance(v, int) or v < 0 or v > limit for v in sizes):
                    raise UserError(f"{path} is corrupt: a field of {layer_path or 'the model'!r} "
                                    f"declares more elements than the layer holds")


def load_packed(path, map_location="cpu", trust=()) -> nn.Module:
    """Rebuild the compressed model stored in a packed file, in eval mode.

    The state is decoded against the model's meta-device skeleton, and the model is built
    only once every decoded shape matches it.
    """
    from . import packers  # noqa: F401  # lazy: the built-in packers register on first use

    packed = read_packed_header(path, trust)
    try:
        skeleton = checked_skeleton(path, packed["model"], trust)
        _check_field_sizes(path, skeleton, packed)
        blobs = _verified_blobs(path, packed)
        state = _decoded_state(path, skeleton, packed, blobs)
        check_state_shapes(path, skeleton, {key: value.shape for key, value in state.items()})
        model = build_from_header(packed["model"], trust)
        expected = model.state_dict()
        state = collections.OrderedDict((key, value.to(expected[key].dtype)) for key, value in state.items())
        state._metadata = state_metadata(model, packed["model"])
        model.load_state_dict(state, strict=True)
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError, AttributeError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0][:200]}") from None
    return model.to(map_location).eval()


def _packed_model_header(path, trust=()) -> dict:
    return read_packed_header(path, trust=trust)["model"]


# torchslim.load reads packed files through this hook: io never imports export.
register_load_format(LoadFormat("packed", is_packed, _packed_model_header, load_packed))
