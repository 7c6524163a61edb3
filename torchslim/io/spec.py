"""Describe a module tree as plain data, and apply such a description to a model.

A saved model is its source model (``create(source, **kwargs)``) plus a list of
``[path, type, config]`` records for every submodule.  Loading builds the source
model, then changes each submodule whose record differs (a pruned conv with fewer
channels, a quantized layer, a factorised linear).  So any compression that swaps or
reshapes layers round-trips without pickles.

Three kinds of record:

* ``torch.nn`` layers: keyword arguments read from the constructor signature; a
  differing layer is built anew from them;
* torchslim's own layer types (:func:`register_module_type`): ``get_config()``;
* any other module (a block of the source model, or a subclass of an ``nn`` layer
  such as timm's ``BatchNormAct2d``): ``{"attrs": plain attributes, "tensors": shapes
  of its own parameters and buffers}``.  It is never constructed from the file: the
  source model must hold a module of that very type at that path, whose attributes
  and tensor shapes are then set to the record's.

A type named in a file resolves only against that explicit list (``torch.nn``'s layer
classes, torchslim's registered types, the types the rebuilt source model holds); no
module a file names is ever imported.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re

import torch
from torch import nn

from ..errors import UserError

_CUSTOM_TYPES: dict[str, type] = {}
_SKIP_ARGS = {"self", "device", "dtype", "args", "kwargs", "inplace"}
# The torchslim modules that define layer types (a fixed list, never taken from a file):
# imported on the first load so their types register, without io importing them eagerly.
_LAYER_MODULES = ("torchslim.quant.modules", "torchslim.codebook.modules", "torchslim.deploy.modules")
_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")  # module names: anything but dots and blanks


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


def _nn_layer_types() -> dict[str, type]:
    """Every module class defined in ``torch.nn.modules`` (``nn.functional`` and the like are not)."""
    found, stack = {}, [nn.Module]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("torch.nn.modules.") and not cls.__name__.startswith("_"):
            found["nn." + cls.__name__] = cls
    return found


_NN_TYPES = _nn_layer_types()


def _load_layer_modules() -> None:
    for name in _LAYER_MODULES:
        importlib.import_module(name)


def _constructible_type(name) -> type:
    """The class a record may construct: a torch.nn layer or a registered torchslim layer."""
    if isinstance(name, str) and name in _NN_TYPES:
        return _NN_TYPES[name]
    if isinstance(name, str) and name not in _CUSTOM_TYPES:
        _load_layer_modules()
    if isinstance(name, str) and name in _CUSTOM_TYPES:
        return _CUSTOM_TYPES[name]
    raise UserError(f"saved model uses unknown layer type {str(name)[:80]!r}; a file may name only "
                    "torch.nn layers, torchslim's layer types and the types of its source model")


def _is_described_by_constructor(cls) -> bool:
    name = _type_name(cls)
    return (name in _NN_TYPES and _NN_TYPES[name] is cls) or _CUSTOM_TYPES.get(name) is cls


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
        if inspect.ismethod(value):
            continue  # a method, not the argument: nn.ModuleList(modules) keeps no `modules` attribute
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


def _strict_plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_strict_plain(v) for v in value]
    raise TypeError(type(value).__name__)


def _plain_or_none(value):
    """``[value]`` as JSON-ready data, or None when it is not plain (a module, a class, a tensor)."""
    try:
        return [_strict_plain(value)]
    except TypeError:
        return None


def foreign_config(module: nn.Module) -> dict:
    """A record for a module no constructor rebuilds: plain attributes and own tensor shapes."""
    attrs = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        plain = _plain_or_none(value)
        if plain is not None:
            attrs[key] = plain[0]
    tensors = {key: list(t.shape) for key, t in [*module._parameters.items(), *module._buffers.items()]
               if t is not None}
    return {"attrs": attrs, "tensors": tensors}


def _root_record(model: nn.Module) -> list[list]:
    """The top module's own tensors (a ViT's class token) and plain attributes (its width), which
    pruning may change too; recorded where the top module has tensors of its own."""
    config = foreign_config(model)
    return [["", _type_name(type(model)), config]] if config["tensors"] else []


def describe_modules(model: nn.Module) -> list[list]:
    """``[[path, type name, config], ...]`` for every submodule, parents first; the path ``""``
    records the top module's own tensor shapes."""
    records = _root_record(model)
    for path, module in model.named_modules():
        if not path:
            continue
        cls = type(module)
        config = module_config(module) if _is_described_by_constructor(cls) else foreign_config(module)
        records.append([path, _type_name(cls), config])
    return records


def _parent_and_name(model: nn.Module, path: str):
    parent_path, _, name = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
    except AttributeError:
        raise UserError(f"saved model has a layer at {path!r} whose parent the model lacks") from None
    return parent, name


def _check_record(record) -> tuple[str, str, dict | None]:
    if not (isinstance(record, list) and len(record) == 3 and isinstance(record[0], str)
            and (record[0] == "" or _PATH.fullmatch(record[0])) and isinstance(record[1], str)
            and (record[2] is None or isinstance(record[2], dict))):
        raise UserError(f"saved model has a malformed layer record {str(record)[:80]}")
    return record[0], record[1], record[2]


def _set_attrs(module: nn.Module, attrs, path: str) -> None:
    for key, value in (attrs or {}).items():
        current = vars(module).get(key, _MISSING)
        if key.startswith("_") or key == "training" or current is _MISSING or _plain_or_none(current) is None:
            raise UserError(f"saved model sets attribute {str(key)[:40]!r} of {path!r}, which the source model lacks")
        if _plain_or_none(value) is None:
            raise UserError(f"saved model has a malformed value for {path}.{key}")
        if _plain_or_none(current) != [value]:
            setattr(module, key, tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value)


def _set_tensor_shapes(module: nn.Module, shapes, path: str) -> None:
    for key, shape in (shapes or {}).items():
        store = module._parameters if key in module._parameters else module._buffers
        current = store.get(key)
        if current is None:
            raise UserError(f"saved model has a tensor {path}.{str(key)[:40]} the source model lacks")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < _MAX_ELEMENTS for s in shape)
                and math.prod(shape) < _MAX_ELEMENTS):
            raise UserError(f"saved model has a malformed shape for {path}.{key}")
        if list(current.shape) == shape:
            continue
        fresh = torch.empty(shape, dtype=current.dtype, device=current.device)
        store[key] = nn.Parameter(fresh, current.requires_grad) if store is module._parameters else fresh


_MISSING = object()
_MAX_ELEMENTS = 1 << 40  # no tensor of a file comes near; larger numbers are damage, not models
_MAX_FALLBACK_ELEMENTS = 1 << 28  # a layer built on the CPU before the checks: at most ~2 GiB of int64


def _restore_foreign(current, type_name: str, config, path: str) -> None:
    if current is None or _type_name(type(current)) != type_name:
        holds = f"a {type(current).__name__}" if current is not None else "nothing"
        raise UserError(f"saved model names layer type {type_name[:80]!r} at {path!r}: not a torch.nn layer, "
                        f"not a torchslim layer, and the source model holds {holds} there")
    if config is None:  # files written before foreign records: the type alone is checked
        return
    if set(config) - {"attrs", "tensors"} or not all(isinstance(v, dict) for v in config.values()):
        raise UserError(f"saved model has a malformed record for {path!r}")
    _set_attrs(current, config.get("attrs"), path)
    _set_tensor_shapes(current, config.get("tensors"), path)


def _restore_root(model: nn.Module, type_name: str, config) -> None:
    if _type_name(type(model)) != type_name:
        raise UserError(f"saved model's top module is a {type_name[:80]!r}, but its source builds a "
                        f"{_type_name(type(model))!r}")
    if not isinstance(config, dict) or set(config) != {"attrs", "tensors"} or \
            not all(isinstance(v, dict) for v in config.values()):
        raise UserError("saved model has a malformed record for its top module")
    # attributes set on the top module after it was built (notes of the caller's) are not restored
    known = {k: v for k, v in config["attrs"].items() if k in vars(model)}
    _set_attrs(model, known, "the top module")
    _set_tensor_shapes(model, config["tensors"], "the top module")


def _config_elements(config: dict) -> int:
    """The product of a config's integers: a bound on the elements its layer can hold."""
    numbers = [v for v in config.values() if isinstance(v, int) and not isinstance(v, bool) and v > 1]
    return math.prod(numbers)


def _build(cls, kwargs: dict) -> nn.Module:
    try:
        return cls(**kwargs)
    except RuntimeError as exc:
        if torch.empty(0).device.type != "meta" or "meta" not in str(exc):
            raise
    # A torchslim layer that computes tables from tensor values while building cannot be built on the
    # meta device: build it on the CPU (its size bounded first), then move it to meta.
    if _config_elements(kwargs) > _MAX_FALLBACK_ELEMENTS:
        raise ValueError(f"its configuration sizes exceed {_MAX_FALLBACK_ELEMENTS} elements")
    with torch.device("cpu"):
        return cls(**kwargs).to("meta")


def _construct(type_name: str, config: dict, path: str) -> nn.Module:
    cls = _constructible_type(type_name)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    try:
        return _build(cls, kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError, OverflowError) as exc:
        raise UserError(f"saved model cannot rebuild {type_name} at {path!r}: {str(exc).splitlines()[0][:120]}") from None


def apply_description(model: nn.Module, records) -> nn.Module:
    """Reshape ``model`` in place so its submodules match ``records``."""
    if not isinstance(records, list):
        raise UserError("saved model has a malformed list of layers")
    records = [_check_record(record) for record in records]
    _load_layer_modules()
    wanted = {path for path, _, _ in records}
    for path, type_name, config in records:
        if not path:
            _restore_root(model, type_name, config)
            continue
        parent, name = _parent_and_name(model, path)
        current = parent._modules.get(name)
        if type_name not in _NN_TYPES and type_name not in _CUSTOM_TYPES:
            _restore_foreign(current, type_name, config, path)
            continue
        if config is None:
            raise UserError(f"saved model has no configuration for the {type_name} at {path!r}")
        if current is not None and _type_name(type(current)) == type_name and module_config(current) == config:
            continue
        parent._modules[name] = _construct(type_name, config, path)
    stale = [path for path, _ in model.named_modules() if path and path not in wanted]
    for path in stale:
        if any(path.startswith(other + ".") for other in stale):
            continue  # removed together with its parent
        parent, name = _parent_and_name(model, path)
        del parent._modules[name]
    return model
