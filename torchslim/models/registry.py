"""Model registry: ``@register_model`` and ``create(name)``.

A builder is a function ``builder(num_classes=10, in_channels=3, width_mult=1.0, **kwargs)``
that returns an ``nn.Module``.  Builders that depend on the spatial input size (LeNet) also
take ``input_size=(H, W)``; the others are shape-agnostic and never see it.

``create`` validates the arguments, builds the model and records two plain attributes:

* ``model.torchslim_arch = {"name": name, "kwargs": {...}}``: JSON-serialisable, and
  ``create(arch["name"], **arch["kwargs"])`` rebuilds the same architecture;
* ``model.input_shape = (C, H, W)``: the shape of one input sample.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UserError, unknown_choice
from ..nn import Registry

__all__ = ["register_model", "create", "list_models", "model_input_shape", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder and the input shape it is designed for."""

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]

    def accepts(self, argument: str) -> bool:
        """Whether the builder takes ``argument`` by name."""
        return argument in inspect.signature(self.builder).parameters

    def extra_options(self) -> list[str]:
        """Builder keyword arguments beyond the common ones."""
        common = {"num_classes", "in_channels", "width_mult", "input_size"}
        params = inspect.signature(self.builder).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in params if p.kind in named and p.name not in common]


_MODELS = Registry("model")


def register_model(name: str, input_shape=(3, 32, 32)):
    """Decorator: register ``builder`` under ``name`` with its default ``(C, H, W)`` input."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelEntry(name=name, builder=builder, input_shape=shape)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _entry(name: str) -> ModelEntry:
    return _MODELS[name]


def model_input_shape(name: str) -> tuple[int, int, int]:
    """The default ``(C, H, W)`` input shape registered for ``name``."""
    return _entry(name).input_shape


def _positive_int(key: str, value) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise UserError(f"model argument {key} must be a positive integer, got {value!r}")
    return number


def _check_width(width_mult) -> float:
    if (isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real)
            or not math.isfinite(width_mult) or width_mult <= 0):
        raise UserError(f"model argument width_mult must be a number > 0, got {width_mult!r}")
    return float(width_mult)


def check_input_size(input_size, default: tuple[int, int]) -> tuple[int, int]:
    if input_size is None:
        return default
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    try:
        height, width = input_size
    except (TypeError, ValueError):
        raise UserError(f"model argument input_size must be (H, W), got {input_size!r}") from None
    return _positive_int("input_size", height), _positive_int("input_size", width)


def _check_options(entry: ModelEntry, kwargs: dict) -> None:
    accepts_any = any(p.kind is p.VAR_KEYWORD
                      for p in inspect.signature(entry.builder).parameters.values())
    options = entry.extra_options()
    for key in kwargs:
        if accepts_any or key in options:
            continue
        if not options:
            raise UserError(f"model {entry.name!r} takes no option {key!r}; its arguments are "
                            "num_classes, in_channels, width_mult, input_size")
        raise unknown_choice(f"option for model {entry.name!r}", key, options)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise UserError(f"options for model {entry.name!r} must be JSON values, got {kwargs!r}") from None


def create(name: str, num_classes: int = 10, in_channels: int | None = None,
           width_mult: float = 1.0, input_size=None, **kwargs) -> nn.Module:
    """Build model ``name``.

    ``in_channels`` defaults to the registered input's C; ``input_size`` (H, W) overrides the
    registered spatial size (it changes the layers only for models whose builder needs it).
    Bad names and values raise :class:`~torchslim.errors.UserError`.
    """
    entry = _entry(name)
    channels, *default_size = entry.input_shape
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", channels if in_channels is None else in_channels)
    width_mult = _check_width(width_mult)
    size = check_input_size(input_size, tuple(default_size))
    _check_options(entry, kwargs)

    build_args = dict(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
    if entry.accepts("input_size"):
        build_args["input_size"] = size
    model = entry.builder(**build_args, **kwargs)
    model.torchslim_arch = {
        "name": name,
        "kwargs": {**build_args, "input_size": list(size), **kwargs},
    }
    model.input_shape = (in_channels, *size)
    return model
