"""Weights from elsewhere: a state dict in ``.pt``/``.pth`` (read with ``weights_only=True``) or ``.safetensors``.

The usual wrappings are undone: a checkpoint dict holding the state under ``state_dict``,
``model_state_dict``, ``model`` or ``module``, and the ``module.`` (DataParallel/DDP) or
``model.`` prefixes on every key.  :func:`fit_state` says in one line which keys or shapes
do not fit the model.
"""

from __future__ import annotations

import os
import pickle

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import UserError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
_PREFIXES = ("module.", "model.")
_PICKLE_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")


def _torch_file(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a plain state dict that torch.load(weights_only=True) reads ({first})") from None


def _safetensors_file(path: str):
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None


def _is_state(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state(obj, path, model_keys=()) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) checkpoint, keys without a shared wrapper prefix."""
    while isinstance(obj, dict) and not _is_state(obj):
        inner = next((obj[key] for key in _WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            keys = ", ".join(str(k) for k in list(obj)[:5])
            raise UserError(f"{path} holds no state dict of tensors (top-level keys: {keys or 'none'})")
        obj = inner
    if not _is_state(obj):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    state = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in model_keys):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_file(path, model_keys=()) -> dict[str, torch.Tensor]:
    """The state dict stored at ``path`` (``.safetensors``, or ``.pt``/``.pth``/``.bin``/``.ckpt``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        obj = _safetensors_file(path)
    elif path.endswith(_PICKLE_EXTENSIONS):
        obj = _torch_file(path)
    else:
        raise UserError(f"weights file {path} must end in .safetensors, {', '.join(_PICKLE_EXTENSIONS)}")
    return unwrap_state(obj, path, model_keys)


def fit_state(model: nn.Module, state: dict, path, name: str) -> None:
    """Load ``state`` into ``model`` after checking keys and shapes (one-line UserError otherwise)."""
    expected = model.state_dict()
    # Checkpoints from before BatchNorm counted its batches lack these counters; they are not weights.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"first missing key {missing[0]!r} ({len(missing)} missing)" if missing else "",
                 f"first unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)" if unexpected else ""]
        raise UserError(f"{path} does not fit {name}: " + "; ".join(p for p in parts if p))
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(f"{path} does not fit {name}: {key} is {tuple(value.shape)} in the file, "
                            f"{tuple(expected[key].shape)} in the model")
    model.load_state_dict(state, strict=False)
