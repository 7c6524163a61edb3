"""Describe a module tree as plain data, and apply such a description to a model.

A saved model is ``create(name, **kwargs)`` from the zoo plus a list of
``{path: (type, config)}`` records for every submodule.  Loading builds the zoo
model, then replaces each submodule whose type or config differs from the record
(a pruned conv with fewer channels, a quantized layer, a factorised linear).  So
any compression that swaps or reshapes plain layers round-trips without pickles.

Standard ``torch.nn`` layers are described from their constructor signature;
other layer types register themselves with :func:`register_module_type` and
provide ``get_config()`` (keyword arguments for ``__init__``).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..errors import UserError

_CUSTOM_TYPES: dict[str, type] = {}
_SKIP_ARGS = {"self", "device", "dtype", "args", "kwargs", "inplace"}


def register_module_type(cls):
    """Class decorator: allow ``cls`` in saved files; it must define ``get_config()``."""
    if not hasattr(cls, "get_config"):
        raise TypeError(f"{cls.__name__} must define get_config() to be saved")
    _CUSTOM_TYPES[_type_name(cls)] = cls
    return cls


def _type_name(cls) -> str:
    if cls.__module__.startswith("torch.nn"):
        return "nn." + cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _resolve_type(name: str) -> type:
    if name.startswith("nn.") and hasattr(nn, name[3:]):
        return getattr(nn, name[3:])
    if name in _CUSTOM_TYPES:
        return _CUSTOM_TYPES[name]
    module_name = name.rsplit(".", 1)[0]
    if module_name.startswith("torchslim."):
        import importlib

        importlib.import_module(module_name)  # registers the type on import
        if name in _CUSTOM_TYPES:
            return _CUSTOM_TYPES[name]
    raise UserError(f"saved model uses unknown layer type {name!r}")


def _plain(value):
    if isinstance(value, (nn.Parameter, torch.Tensor)):
        return True  # a bias tensor means bias=True
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    raise TypeError(type(value).__name__)


def module_config(module: nn.Module) -> dict:
    """Constructor keyword arguments that rebuild ``module``'s structure."""
    if hasattr(module, "get_config"):
        return dict(module.get_config())
    config = {}
    for name in inspect.signature(type(module).__init__).parameters:
        if name in _SKIP_ARGS or not hasattr(module, name):
            continue
        value = getattr(module, name)
        if name == "bias" and value is None:
            value = False
        try:
            config[name] = _plain(value)
        except TypeError:
            raise UserError(
                f"cannot describe {type(module).__name__}.{name} for saving; "
                "register the layer type with torchslim.io.register_module_type"
            ) from None
    return config


def describe_modules(model: nn.Module) -> list[list]:
    """``[[path, type name, config], ...]`` for every submodule, parents first."""
    records = []
    for path, module in model.named_modules():
        if not path:
            continue
        cls = type(module)
        if not (cls.__module__.startswith("torch.nn") or _type_name(cls) in _CUSTOM_TYPES):
            # A zoo building block (e.g. a residual block): rebuilt by the zoo itself.
            records.append([path, _type_name(cls), None])
            continue
        records.append([path, _type_name(cls), module_config(module)])
    return records


def _parent_and_name(model: nn.Module, path: str):
    parent_path, _, name = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), name


def apply_description(model: nn.Module, records) -> nn.Module:
    """Reshape ``model`` in place so its submodules match ``records``."""
    wanted = {path for path, _, _ in records}
    for path, type_name, config in records:
        parent, name = _parent_and_name(model, path)
        current = parent._modules.get(name)
        if config is None:
            if current is None or _type_name(type(current)) != type_name:
                raise UserError(f"saved model expects a {type_name} at {path!r}; the zoo model differs")
            continue
        if current is not None and _type_name(type(current)) == type_name and module_config(current) == config:
            continue
        cls = _resolve_type(type_name)
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
        parent._modules[name] = cls(**kwargs)
    stale = [path for path, _ in model.named_modules() if path and path not in wanted]
    for path in stale:
        if any(path.startswith(other + ".") for other in stale):
            continue  # removed together with its parent
        parent, name = _parent_and_name(model, path)
        del parent._modules[name]
    return model
