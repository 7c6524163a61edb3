"""Module helpers every technique shares: one home, so each is written once.

- :func:`set_submodule`: put a module at a dotted path (``features.3``) of a model;
- :func:`weight_layers`: the Linear and Conv layers that carry a weight, by path;
- :func:`record_meta`: merge a technique's provenance into a model's ``torchslim_meta``;
- :func:`pair`: an int or a pair as a pair (kernel sizes, strides, padding);
- :class:`Registry`: name -> entry, refusing an unknown name with the valid ones and a guess.

``from torch import nn`` inside the package still names torch's ``nn``: this module is
``torchslim.nn`` and is imported by relative name.
"""

from __future__ import annotations

from torch import nn

from .errors import unknown_choice

__all__ = ["Registry", "pair", "record_meta", "set_submodule", "weight_layers"]


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule of ``model`` at the dotted ``path`` by ``module`` (in place)."""
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)


def weight_layers(model: nn.Module, types=(nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) -> dict[str, nn.Module]:
    """``{path: layer}`` of every layer of ``types`` in ``model``, in module order."""
    return {path: module for path, module in model.named_modules() if isinstance(module, types)}


def record_meta(model: nn.Module, source: nn.Module | None = None, **entries) -> nn.Module:
    """Set ``model.torchslim_meta`` to ``source``'s notes (default: its own) updated with ``entries``.

    A new dict each time: a copy made from ``source`` never shares its notes with it.
    """
    origin = model if source is None else source
    meta = dict(getattr(origin, "torchslim_meta", {}) or {})
    meta.update(entries)
    model.torchslim_meta = meta
    return model


def pair(value) -> tuple:
    """``3 -> (3, 3)``; a list or tuple as a tuple."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class Registry(dict):
    """A ``dict`` of named entries whose lookup of an unknown name is a one-line user error.

    ``registry[name]`` raises :class:`torchslim.errors.UserError` naming the valid choices and
    the closest one ("did you mean"); ``registry.register(name)`` is a decorator.
    """

    def __init__(self, kind: str, entries: dict | None = None):
        super().__init__(entries or {})
        self.kind = kind

    def __missing__(self, name):
        raise unknown_choice(self.kind, name, self)

    def register(self, name: str, entry=None):
        if entry is not None:
            self[name] = entry
            return entry

        def decorate(obj):
            self[name] = obj
            return obj

        return decorate
