"""Load-format hook: the file kinds that packages above ``io`` write and :func:`torchslim.load` reads.

A package with its own container (``torchslim.export``'s packed file) registers how to recognise
a file, read its model header and load it; ``io`` never imports that package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class LoadFormat:
    name: str
    recognise: Callable  # (path) -> bool; reads the header only, verifies nothing
    read_header: Callable  # (path, trust) -> the model header dict of torchslim.save
    load: Callable  # (path, map_location, trust) -> nn.Module


_FORMATS: dict[str, LoadFormat] = {}


def register_load_format(fmt: LoadFormat) -> LoadFormat:
    _FORMATS[fmt.name] = fmt
    return fmt


def format_of(path) -> LoadFormat | None:
    """The registered format that recognises ``path``; None for a plain torchslim file."""
    return next((fmt for fmt in _FORMATS.values() if fmt.recognise(path)), None)
