"""Saving and loading: an architecture spec plus a safetensors state, never a pickle."""

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .serialize import load, read_header, save, trusting
from .spec import describe_modules, register_module_type

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "describe_modules",
    "load",
    "read_header",
    "register_module_type",
    "save",
    "trusting",
]
