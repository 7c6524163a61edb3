"""``save`` / ``load``: one safetensors file holding the state and a JSON header.

The header records how to rebuild the network (zoo name + kwargs + per-layer
description, see :mod:`torchslim.io.spec`), its input shape and class count, and
free-form metadata from the step that produced it.  No pickle is involved, so a
file can be loaded in any process and cannot run code.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from .. import __version__
from ..errors import UserError
from .atomic import atomic_write_bytes
from .spec import apply_description, describe_modules

HEADER_KEY = "torchslim"
FORMAT_VERSION = 1


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors = {}
    seen = {}
    for key, value in model.state_dict().items():
        if value is None:
            continue
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        # safetensors refuses shared storage; copies keep the file self-contained.
        tensors[key] = value.detach().cpu().clone().contiguous() if ptr in seen else value.detach().cpu().contiguous()
        seen[ptr] = key
    return tensors


def build_header(model: nn.Module, **meta) -> dict:
    arch = getattr(model, "torchslim_arch", None)
    if arch is None:
        raise UserError(
            f"{type(model).__name__} was not built by torchslim.models.create; "
            "register it with @torchslim.models.register_model to save it"
        )
    input_shape = meta.pop("input_shape", None) or getattr(model, "input_shape", None)
    num_classes = meta.pop("num_classes", None) or arch.get("kwargs", {}).get("num_classes")
    extra = dict(getattr(model, "torchslim_meta", {}) or {})
    extra.update(meta)
    return {
        "format": FORMAT_VERSION,
        "torchslim_version": __version__,
        "arch": arch,
        "modules": describe_modules(model),
        "input_shape": list(input_shape) if input_shape else None,
        "num_classes": num_classes,
        "meta": extra,
    }


def save(model: nn.Module, path, **meta) -> str:
    """Write ``model`` to ``path`` atomically; returns the path.

    Extra keyword arguments are stored as JSON metadata (e.g. ``top1=0.91``).
    """
    from safetensors.torch import save as st_save

    header = build_header(model, **meta)
    data = st_save(_state_tensors(model), metadata={HEADER_KEY: json.dumps(header)})
    atomic_write_bytes(path, data)
    return os.fspath(path)


def read_header(path) -> dict:
    """The JSON header of a torchslim file, without loading the weights."""
    path = os.fspath(path)
    packed = _packed_module(path)
    if packed is not None:  # a packed container (torchslim.export): its embedded model header
        return packed.read_packed_header(path)["model"]
    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > os.path.getsize(path) - 8 or size > 1 << 28:
                raise ValueError("bad header length")
            raw = json.loads(handle.read(size))
        header = json.loads(raw["__metadata__"][HEADER_KEY])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{path} is not a torchslim model file (no torchslim header)") from None
    if header.get("format", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer torchslim (format {header['format']})")
    return header


def _packed_module(path):
    """``torchslim.export.packed`` when ``path`` is a packed container, else None."""
    from ..export import packed

    return packed if packed.is_packed(path) else None


def build_from_header(header: dict) -> nn.Module:
    """Rebuild the (untrained) architecture a header describes."""
    from ..models import create

    arch = header["arch"]
    model = create(arch["name"], **arch.get("kwargs", {}))
    apply_description(model, header["modules"])
    if header.get("input_shape"):
        model.input_shape = tuple(header["input_shape"])
    model.torchslim_meta = dict(header.get("meta") or {})
    return model


def load(path, map_location="cpu") -> nn.Module:
    """Rebuild the model saved at ``path`` with its exact weights, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    packed = _packed_module(path)
    if packed is not None:
        return packed.load_packed(path, map_location=map_location)
    header = read_header(path)
    model = build_from_header(header)
    try:
        tensors = load_file(os.fspath(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path} does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()
