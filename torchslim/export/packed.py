"""The packed container: one safetensors file holding a compressed model at its real size.

Layout:

* tensors named ``<layer path>::<field>``, written by each layer type's packer
  (:mod:`torchslim.export.registry`): bit-packed signs, ternary and k-bit codes,
  codebooks, relative sparse indices plus values, per-channel scales, and the
  plain float state of the other layers;
* metadata ``torchslim.packed``: JSON with the architecture description (the
  same header as :func:`torchslim.save`), one ``[path, packer, meta, fields]``
  record per module, and one SHA-256 over all tensors (names, dtypes, shapes,
  bytes); zlib-compressed and base64-encoded (``torchslim.packed.encoding``),
  since on a small model the header is a good part of the file;
* metadata ``torchslim.packed.sha256``: the SHA-256 of that JSON
  (:func:`read_packed_header` returns it decoded).

:func:`load_packed` refuses a file whose length differs from what its header
declares (truncated or padded), whose header or any tensor fails its checksum,
or whose decoded state does not fit the architecture: a damaged file is never
loaded as a wrong model.  :func:`torchslim.load` dispatches here by itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib

import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_write_bytes
from ..io.serialize import build_from_header, build_header
from .registry import PackOptions, find_packer, packer_by_name

PACKED_KEY = "torchslim.packed"
DIGEST_KEY = "torchslim.packed.sha256"
ENCODING_KEY = "torchslim.packed.encoding"
PACKED_FORMAT = 1
_SEP = "::"


def _digest(tensors: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pack_model(model: nn.Module, options: PackOptions | None = None, **meta) -> bytes:
    """The bytes of the packed file for ``model``."""
    from safetensors.torch import save as st_save

    from . import packers  # noqa: F401  (built-in packers)

    options = options or PackOptions()
    tensors, records = {}, []
    for path, module in model.named_modules():
        packer = find_packer(module)
        fields, layer_meta = packer.pack(module, options)
        if not fields and not layer_meta:
            continue
        for field, value in fields.items():
            tensors[f"{path}{_SEP}{field}"] = value.detach().cpu().contiguous()
        records.append([path, packer.name, layer_meta, sorted(fields)])
    header = {
        "format": PACKED_FORMAT,
        "model": build_header(model, **meta),
        "layers": records,
        "tensors": sorted(tensors),
        "data_sha256": _digest(tensors),
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    blob = base64.b64encode(zlib.compress(text.encode(), 9)).decode()
    return st_save(tensors, metadata={PACKED_KEY: blob, ENCODING_KEY: "zlib+base64", DIGEST_KEY: digest})


def save_packed(model: nn.Module, path, options: PackOptions | None = None, **meta) -> int:
    """Write ``model`` packed to ``path`` (atomically); returns the file size in bytes."""
    data = pack_model(model, options, **meta)
    atomic_write_bytes(path, data)
    return len(data)


def packed_size(model: nn.Module, options: PackOptions | None = None) -> int:
    """Bytes :func:`save_packed` would write for ``model``."""
    return len(pack_model(model, options))


def raw_header(path) -> tuple[dict, int]:
    """The safetensors JSON header of ``path`` and the file size it implies."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or length > min(size - 8, 1 << 28):
                raise ValueError
            header = json.loads(handle.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
        raise UserError(f"{path} is not a torchslim file, or is truncated (unreadable header)") from None
    return header, 8 + length + max(ends, default=0)


def is_packed(path) -> bool:
    """True when ``path`` looks like a packed container (header only; nothing is verified)."""
    try:
        header, _ = raw_header(path)
    except UserError:
        return False
    return PACKED_KEY in (header.get("__metadata__") or {})


def read_packed_header(path) -> dict:
    """The verified JSON header of a packed file (raises UserError when damaged)."""
    header, expected = raw_header(path)
    metadata = header.get("__metadata__") or {}
    if PACKED_KEY not in metadata:
        raise UserError(f"{path} is not a packed torchslim file")
    actual = os.path.getsize(path)
    if actual != expected:
        raise UserError(f"{path} is corrupt: {actual} bytes on disk, its header declares {expected} "
                        f"({'truncated' if actual < expected else 'trailing data'})")
    try:
        if metadata.get(ENCODING_KEY) != "zlib+base64":
            raise ValueError
        text = zlib.decompress(base64.b64decode(metadata[PACKED_KEY], validate=True)).decode()
    except (ValueError, zlib.error, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt: its header cannot be decoded") from None
    if hashlib.sha256(text.encode()).hexdigest() != metadata.get(DIGEST_KEY):
        raise UserError(f"{path} is corrupt: its header fails the checksum")
    packed = json.loads(text)
    if packed.get("format", 0) > PACKED_FORMAT:
        raise UserError(f"{path} was written by a newer torchslim (packed format {packed['format']})")
    return packed


def _verified_tensors(path, packed: dict, map_location) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
    if sorted(tensors) != packed["tensors"]:
        raise UserError(f"{path} is corrupt: its tensors differ from the ones its header lists")
    if _digest(tensors) != packed["data_sha256"]:
        raise UserError(f"{path} is corrupt: its weights fail the checksum")
    return tensors


def load_packed(path, map_location="cpu") -> nn.Module:
    """Rebuild the compressed model stored in a packed file, in eval mode."""
    from . import packers  # noqa: F401

    packed = read_packed_header(path)
    tensors = _verified_tensors(path, packed, map_location)
    try:
        model = build_from_header(packed["model"])
        state = {}
        for layer_path, packer_name, layer_meta, fields in packed["layers"]:
            packer = packer_by_name(packer_name)
            if packer is None:
                raise UserError(f"{path} needs the layer packer {packer_name!r}, which this torchslim lacks")
            module = model.get_submodule(layer_path) if layer_path else model
            own = {field: tensors[f"{layer_path}{_SEP}{field}"] for field in fields}
            prefix = f"{layer_path}." if layer_path else ""
            for key, value in packer.unpack(module, own, layer_meta).items():
                state[prefix + key] = value
        expected = model.state_dict()
        if set(state) != set(expected):
            missing = sorted(set(expected) - set(state))[:3]
            raise UserError(f"{path} does not match its architecture (missing {missing}, "
                            f"unexpected {sorted(set(state) - set(expected))[:3]})")
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise UserError(f"{path} is corrupt: {key} has shape {tuple(value.shape)}, "
                                f"the architecture needs {tuple(expected[key].shape)}")
            state[key] = value.to(expected[key].dtype)
        model.load_state_dict(state, strict=True)
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0][:200]}") from None
    return model.to(map_location).eval()
