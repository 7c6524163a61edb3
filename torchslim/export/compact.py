"""The pieces that keep a packed file small on a small model.

* :func:`narrowest` stores a tensor in the narrowest dtype that holds it *exactly*
  (float32 side data that is float16-exact as float16, int64 indices that fit a
  byte as uint8); the record keeps the original dtype and loading casts back,
  so the round trip is bit-identical.
* :class:`BlobWriter` / :class:`BlobReader` concatenate every field of one stored
  dtype into a single flat tensor (one safetensors entry per dtype instead of one
  per field: on LeNet-5 the per-entry JSON was a fifth of the file).  A field is
  recorded as ``[name, stored dtype, shape, original dtype or None]``; its offset
  is implied by the order of the records.
* :func:`modules_delta` / :func:`expand_modules` store the architecture
  description as its difference from the zoo model the header names (the layers a
  compression replaced or removed), instead of every layer's full config.
"""

from __future__ import annotations

import json
import math

import torch

DTYPES = {
    "u8": torch.uint8, "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
    "f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64, "bool": torch.bool,
}
_KEYS = {dtype: key for key, dtype in DTYPES.items()}
_BITS_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
              torch.float64: torch.int64}
_FLOAT_CANDIDATES = (torch.float16, torch.bfloat16, torch.float32)
_INT_CANDIDATES = (torch.uint8, torch.int8, torch.int16, torch.int32)


def dtype_key(dtype: torch.dtype) -> str:
    return _KEYS[dtype]


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(_BITS_VIEW[a.dtype]), b.view(_BITS_VIEW[b.dtype]))


def narrowest(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the narrowest dtype that converts back to it bit for bit (or itself)."""
    if tensor.numel() == 0:
        return tensor
    if tensor.dtype in (torch.float32, torch.float64):
        for dtype in _FLOAT_CANDIDATES:
            if dtype.itemsize >= tensor.dtype.itemsize:
                break
            narrow = tensor.to(dtype)
            if _same_bits(narrow.to(tensor.dtype), tensor):
                return narrow
        return tensor
    if tensor.dtype in (torch.int16, torch.int32, torch.int64):
        low, high = int(tensor.min()), int(tensor.max())
        for dtype in _INT_CANDIDATES:
            if dtype.itemsize >= tensor.dtype.itemsize:
                break
            info = torch.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return tensor.to(dtype)
    return tensor


class BlobWriter:
    """Collects fields into one flat tensor per stored dtype."""

    def __init__(self):
        self.parts: dict[str, list] = {}

    def add(self, name: str, tensor: torch.Tensor) -> list:
        tensor = tensor.detach().cpu().contiguous()
        stored = narrowest(tensor)
        key = dtype_key(stored.dtype)
        self.parts.setdefault(key, []).append(stored.reshape(-1))
        original = None if stored.dtype == tensor.dtype else dtype_key(tensor.dtype)
        return [name, key, list(tensor.shape), original]

    def blobs(self) -> dict[str, torch.Tensor]:
        return {key: torch.cat(parts) if len(parts) > 1 else parts[0].clone() for key, parts in self.parts.items()}


class BlobReader:
    """Hands the fields back in the order they were added; raises ValueError when they do not fit."""

    def __init__(self, blobs: dict[str, torch.Tensor]):
        self.blobs, self.cursor = blobs, dict.fromkeys(blobs, 0)

    def take(self, record) -> tuple[str, torch.Tensor]:
        name, key, shape, original = record
        blob = self.blobs.get(key)
        if blob is None or DTYPES.get(key) != blob.dtype:
            raise ValueError(f"field {name!r} needs a {key} blob the file lacks")
        count, start = math.prod(shape), self.cursor[key]
        if start + count > blob.numel():
            raise ValueError(f"field {name!r} runs past the end of its {key} blob")
        self.cursor[key] = start + count
        tensor = blob[start:start + count].reshape(shape)
        return name, (tensor.to(DTYPES[original]) if original else tensor.clone())

    def check_used(self) -> None:
        left = {key: blob.numel() - self.cursor[key] for key, blob in self.blobs.items()
                if blob.numel() != self.cursor[key]}
        if left:
            raise ValueError(f"blobs hold data no field uses: {left}")


def _config_delta(config, base):
    """``[changed keys, removed keys]`` turning ``base`` into ``config``, or ``config`` itself when shorter."""
    if not isinstance(config, dict) or not isinstance(base, dict):
        return config
    delta = [{k: v for k, v in config.items() if k not in base or base[k] != v}, sorted(set(base) - set(config))]
    return delta if len(json.dumps(delta)) < len(json.dumps(config)) else config


def _apply_config_delta(delta, base):
    if not isinstance(delta, list) or not isinstance(base, dict):
        return delta
    changed, removed = delta
    config = {k: v for k, v in base.items() if k not in removed}
    config.update(changed)
    return config


def modules_delta(records: list, fresh: list) -> dict:
    """The description ``records`` as its difference from ``fresh`` (the zoo model's description).

    A layer the compression replaced keeps only the config keys that changed
    (``[path, type, [changed, removed keys]]``); a new path keeps its whole config.
    """
    fresh_by_path = {path: (kind, config) for path, kind, config in fresh}
    wanted = {path for path, _, _ in records}
    changed = []
    for path, kind, config in records:
        base = fresh_by_path.get(path)
        if base == (kind, config):
            continue
        changed.append([path, kind, config if base is None else _config_delta(config, base[1])])
    return {"drop": [path for path in fresh_by_path if path not in wanted], "set": changed}


def expand_modules(delta: dict, fresh: list) -> list:
    """Inverse of :func:`modules_delta`: the full description, parents before children."""
    fresh_by_path = {path: config for path, _, config in fresh}
    drop = set(delta["drop"])
    records = {path: [path, kind, config] for path, kind, config in fresh if path not in drop}
    for path, kind, config in delta["set"]:
        if path in fresh_by_path:
            config = _apply_config_delta(config, fresh_by_path[path])
        records[path] = [path, kind, config]  # replaces in place, or appends a new path
    return list(records.values())
