"""The safetensors container both file kinds use: a checked header and a whole-file checksum.

:func:`read_container` reads only the JSON header (bounded in size) and checks every
tensor entry in it against the file: known dtype, a shape of non-negative sizes whose
bytes equal its data range, ranges that tile the data exactly, and a file length equal
to what the header declares.  Nothing is allocated from a header before these checks.

:func:`seal` writes the SHA-256 of the whole file (with the 64 digits of the checksum
itself read as zeros) into the metadata entry ``torchslim.sha256``; :func:`verify`
recomputes it.  Every byte of a sealed file is covered: the length prefix, the JSON
(padding included), the metadata and the tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

from ..errors import UserError

CHECKSUM_KEY = "torchslim.sha256"
_PLACEHOLDER = "0" * 64
_MAX_HEADER = 1 << 28
_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class Container:
    """A checked safetensors header: ``tensors`` maps name -> (dtype, shape)."""

    path: str
    header_bytes: bytes
    metadata: dict
    tensors: dict
    size: int


def _unreadable(path) -> UserError:
    return UserError(f"{path} is not a torchslim model file, or is corrupt (unreadable header)")


def _check_entries(path, raw: dict, data_bytes: int) -> dict:
    tensors, ranges = {}, []
    for name, entry in raw.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], [int(s) for s in entry["shape"]]
            start, end = (int(v) for v in entry["data_offsets"])
            if dtype not in _ITEM_BYTES or min(shape, default=0) < 0 or end < start:
                raise ValueError
            if math.prod(shape) * _ITEM_BYTES[dtype] != end - start:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is corrupt: tensor {name!r} has a malformed entry") from None
        tensors[name] = (dtype, tuple(shape))
        ranges.append((start, end))
    position = 0
    for start, end in sorted(ranges):
        if start != position:
            raise UserError(f"{path} is corrupt: its tensors do not tile the data")
        position = end
    if position != data_bytes:
        state = "truncated" if position > data_bytes else "trailing data"
        raise UserError(f"{path} is corrupt: its header declares {position} bytes of tensors, "
                        f"the file holds {data_bytes} ({state})")
    return tensors


def read_container(path) -> Container:
    """The checked header of the safetensors file at ``path`` (raises UserError)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 1 or length > min(size - 8, _MAX_HEADER):
                raise ValueError
            header_bytes = handle.read(length)
        raw = json.loads(header_bytes)
        metadata = raw.get("__metadata__") or {}
        if not isinstance(raw, dict) or not isinstance(metadata, dict):
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError, OSError):
        raise _unreadable(path) from None
    tensors = _check_entries(path, raw, size - 8 - length)
    return Container(path, header_bytes, metadata, tensors, size)


def placeholder_metadata() -> dict:
    """The metadata entry :func:`seal` fills in; pass it to ``safetensors.torch.save``."""
    return {CHECKSUM_KEY: _PLACEHOLDER}


def _value_span(header_bytes: bytes, value: str) -> int:
    token = f'"{CHECKSUM_KEY}":"{value}"'.encode()
    start = header_bytes.find(token)
    if start < 0 or header_bytes.find(token, start + 1) >= 0:
        return -1
    return 8 + start + len(token) - 65  # offset of the 64 digits in the file


def _sorted_metadata(data: bytes, length: int) -> bytes:
    """``data`` with its metadata entries in key order.

    The safetensors writer keeps metadata in a hash map whose order changes from process to
    process, so the same model would give different bytes; the entries are reordered in place
    (same characters, same length), which leaves every offset as it was."""
    raw = json.loads(data[8:8 + length], object_pairs_hook=dict)
    raw["__metadata__"] = dict(sorted(raw["__metadata__"].items()))
    ordered = {"__metadata__": raw.pop("__metadata__"), **raw}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > length:
        raise ValueError("the reordered header does not fit its original length")
    return data[:8] + text + b" " * (length - len(text)) + data[8 + length:]


def seal(data: bytes) -> bytes:
    """``data`` (written with :func:`placeholder_metadata`) with its metadata in key order and
    its checksum filled in: the same model gives the same bytes in every process."""
    length = int.from_bytes(data[:8], "little")
    data = _sorted_metadata(data, length)
    at = _value_span(data[8:8 + length], _PLACEHOLDER)
    if at < 0:
        raise ValueError("no unique checksum placeholder in the header")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:at] + digest + data[at + 64:]


def is_sealed(container: Container) -> bool:
    return CHECKSUM_KEY in container.metadata


def verify(container: Container) -> None:
    """Refuse the file unless its whole-file checksum matches (UserError naming the file)."""
    value = container.metadata.get(CHECKSUM_KEY)
    at = _value_span(container.header_bytes, value) if isinstance(value, str) and len(value) == 64 else -1
    if at < 0:
        raise UserError(f"{container.path} is corrupt: its checksum entry is malformed")
    digest = hashlib.sha256()
    with open(container.path, "rb") as handle:
        digest.update(handle.read(at))
        handle.read(64)
        digest.update(_PLACEHOLDER.encode())
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    if digest.hexdigest() != value:
        raise UserError(f"{container.path} is corrupt: it fails its checksum")
