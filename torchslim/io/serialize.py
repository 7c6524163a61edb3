"""``save`` / ``load``: one safetensors file holding the state and a JSON header.

The header records how to rebuild the network (its source + kwargs + per-layer
description, see :mod:`torchslim.io.spec`), its input shape and class count, the
modules' state-dict versions, and free-form metadata from the step that produced it.
No pickle is involved, so a file can be loaded in any process and cannot run code.

Files of format 2 carry a whole-file SHA-256 (:mod:`torchslim.io.container`), checked
on every load: a damaged file is refused.  Files of format 1, written before the
checksum existed, still load, without that check.

Loading first rebuilds the model on the meta device and compares every state shape
with the tensors the file stores; memory is allocated only after that check passes.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import os

import torch
from torch import nn

from .. import __version__
from ..errors import UserError
from ..models.sources import check_trust
from .atomic import atomic_write_bytes
from .container import is_sealed, placeholder_metadata, read_container, seal, verify
from .formats import format_of
from .spec import apply_description, describe_modules

HEADER_KEY = "torchslim"
FORMAT_VERSION = 2
_EXTRA_BYTES = 1 << 30  # memory a rebuilt model may hold beyond its file (source model, buffers)
_SOURCE_RATIO = 64  # a source model may be this many times larger than the file that shrank it
_TRUSTED = contextvars.ContextVar("torchslim_trusted_packages", default=())


@contextlib.contextmanager
def trusting(packages):
    """Within the block, :func:`load` may also import ``packages`` (the CLI's ``--trust``)."""
    token = _TRUSTED.set(_TRUSTED.get() + check_trust(packages))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _state_tensors(state) -> dict[str, torch.Tensor]:
    """The tensors to store for a state dict (or a module's), each self-contained."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensors = {}
    seen = {}
    for key, value in state.items():
        if value is None:
            continue
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        # safetensors refuses shared storage; copies keep the file self-contained.
        tensors[key] = value.detach().cpu().clone().contiguous() if ptr in seen else value.detach().cpu().contiguous()
        seen[ptr] = key
    return tensors


def _state_versions(state: dict) -> dict[str, int]:
    """The per-module ``version`` of a state dict's metadata, where it is not the default 1."""
    metadata = getattr(state, "_metadata", None) or {}
    return {prefix: entry["version"] for prefix, entry in metadata.items()
            if isinstance(entry.get("version"), int) and entry["version"] != 1}


def build_header(model: nn.Module, state: dict | None = None, **meta) -> dict:
    arch = getattr(model, "torchslim_arch", None)
    if arch is None:
        raise UserError(
            f"{type(model).__name__} was not built by torchslim.models.create; wrap it with "
            "torchslim.models.wrap(model, source=...) or register it with @torchslim.models.register_model"
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
        "state_versions": _state_versions(model.state_dict() if state is None else state),
        "input_shape": list(input_shape) if input_shape else None,
        "num_classes": num_classes,
        "meta": extra,
    }


def model_bytes(model: nn.Module, **meta) -> bytes:
    """The bytes :func:`save` writes for ``model``."""
    from safetensors.torch import save as st_save  # lazy: safetensors loads on the first read or write

    state = model.state_dict()
    header = build_header(model, state, **meta)
    metadata = {HEADER_KEY: json.dumps(header), **placeholder_metadata()}
    return seal(st_save(_state_tensors(state), metadata=metadata))


def save(model: nn.Module, path, **meta) -> str:
    """Write ``model`` to ``path`` atomically; returns the path.

    Extra keyword arguments are stored as JSON metadata (e.g. ``top1=0.91``).
    """
    atomic_write_bytes(path, model_bytes(model, **meta))
    return os.fspath(path)


def _parse_header(container) -> dict:
    try:
        header = json.loads(container.metadata[HEADER_KEY])
        if not isinstance(header, dict) or not isinstance(header.get("arch"), dict):
            raise ValueError
        version = header.get("format", 0)
        if not isinstance(version, int):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{container.path} is not a torchslim model file (no torchslim header)") from None
    if version > FORMAT_VERSION:
        raise UserError(f"{container.path} was written by a newer torchslim (format {version})")
    return header


def _checked_header(container) -> dict:
    """The header of a verified file: a sealed file must pass its checksum; format 2 must be sealed."""
    if is_sealed(container):
        verify(container)
    header = _parse_header(container)
    if not is_sealed(container) and header.get("format", 0) >= 2:
        raise UserError(f"{container.path} is corrupt: it has lost its checksum")
    return header


def read_header(path, trust=()) -> dict:
    """The JSON header of a torchslim file, without loading the weights (nor checking them)."""
    path = os.fspath(path)
    fmt = format_of(path)
    if fmt is not None:  # a packed container (torchslim.export): its embedded model header
        return fmt.read_header(path, trust)
    return _parse_header(read_container(path))


def source_model(arch: dict, trust=(), meta: bool = False) -> nn.Module:
    """The source model an ``arch`` record names, before any change (on the meta device if asked)."""
    from ..models import sources  # lazy: the model sources load only to rebuild

    trust = sources.check_trust(trust) + _TRUSTED.get()
    kwargs = arch.get("kwargs") if isinstance(arch, dict) else None
    if not isinstance(kwargs or {}, dict) or not isinstance(arch, dict):
        raise UserError("saved model has a malformed source record")
    build = sources.build_on_meta if meta else sources.build
    return build(arch.get("name"), kwargs, trust)


def _finish(model: nn.Module, header: dict) -> nn.Module:
    apply_description(model, header.get("modules") or [])
    shape = header.get("input_shape")
    if shape:
        if not (isinstance(shape, list) and all(isinstance(v, int) and v > 0 for v in shape)):
            raise UserError("saved model has a malformed input shape")
        model.input_shape = tuple(shape)
    meta = header.get("meta") or {}
    if not isinstance(meta, dict):
        raise UserError("saved model has malformed notes")
    model.torchslim_meta = dict(meta)
    return model


def build_from_header(header: dict, trust=()) -> nn.Module:
    """Rebuild the (untrained) architecture a header describes."""
    return _finish(source_model(header["arch"], trust), header)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def check_sizes(path, skeleton: nn.Module, source_bytes: int) -> None:
    """Refuse a model whose rebuild would need far more memory than its file justifies."""
    file_bytes = os.path.getsize(path)
    state = skeleton.state_dict()
    extra = _nbytes(b for name, b in skeleton.named_buffers() if name not in state)
    if extra > _EXTRA_BYTES or source_bytes > _SOURCE_RATIO * file_bytes + _EXTRA_BYTES:
        raise UserError(f"{path} describes a model far larger than the file ({source_bytes + extra} bytes "
                        f"to build for {file_bytes} on disk); refusing to allocate it")


def check_state_shapes(path, skeleton: nn.Module, shapes: dict) -> None:
    """Every state entry of ``skeleton`` must be in ``shapes`` with that shape, and nothing more."""
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise UserError(f"{path} does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise UserError(f"{path} does not match its architecture: {key} is {tuple(shapes[key])} "
                            f"in the file, {shape} in the model")


def checked_skeleton(path, header: dict, trust=()) -> nn.Module:
    """The model of ``header`` on the meta device, refused when it needs far more memory than the file."""
    model = source_model(header["arch"], trust, meta=True)
    check_sizes(path, model, _nbytes([*model.parameters(), *model.buffers()]))
    with torch.device("meta"):
        model = _finish(model, header)
    check_sizes(path, model, _nbytes(model.state_dict().values()))  # bounds what a packed file decodes to
    return model


def checked_build(path, header: dict, shapes: dict, trust=()) -> nn.Module:
    """The model of ``header``, built for real only once its skeleton fits ``shapes`` and the file."""
    check_state_shapes(path, checked_skeleton(path, header, trust), shapes)
    return build_from_header(header, trust)


def state_metadata(model: nn.Module, header: dict) -> collections.OrderedDict:
    """The state dict metadata to load with: the rebuilt modules' own, with the file's versions."""
    metadata = collections.OrderedDict((k, dict(v)) for k, v in model.state_dict()._metadata.items())
    versions = header.get("state_versions")
    if versions is None:  # older files: the versions of the code that rebuilt the model
        return metadata
    if not isinstance(versions, dict) or not all(isinstance(v, int) for v in versions.values()):
        raise UserError("saved model has malformed state versions")
    for prefix, entry in metadata.items():
        entry["version"] = versions.get(prefix, 1)
    return metadata


def load(path, map_location="cpu", trust=()) -> nn.Module:
    """Rebuild the model saved at ``path`` with its exact weights, in eval mode.

    ``trust`` names the packages whose code may be imported to rebuild a model made from
    the user's own source (``PKG.MODULE:CALLABLE``); zoo, torchvision and timm need none.
    """
    from safetensors import SafetensorError  # lazy: safetensors loads on the first read or write
    from safetensors.torch import load_file  # lazy: safetensors loads on the first read or write

    fmt = format_of(path)
    if fmt is not None:
        return fmt.load(path, map_location, trust)
    container = read_container(path)
    header = _checked_header(container)
    try:
        model = checked_build(path, header, {k: shape for k, (_, shape) in container.tensors.items()}, trust)
    except (KeyError, TypeError):
        raise UserError(f"{path} is not a torchslim model file (its header is malformed)") from None
    try:
        tensors = load_file(os.fspath(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
    state = collections.OrderedDict(tensors)
    state._metadata = state_metadata(model, header)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path} does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()
