"""Per-layer packers: how each layer type is written into, and read back from, a packed file.

A packer is two functions, registered for a module type:

* ``pack(module, options) -> (tensors, meta)``: the module's *own* state
  (parameters and buffers, not its children's) as named tensors, mostly uint8
  bit streams, plus a small JSON ``meta`` (shapes, bit widths);
* ``unpack(module, tensors, meta) -> state``: the module's own ``state_dict``
  entries, rebuilt exactly.

The equivalent plain ``nn`` layer (for the float32 size of the same model and for ONNX)
is the layer's own ``to_float()`` (:class:`torchslim.nn.CompressedLayer`).  A module
whose type (or any base class) has no packer is stored as it is, with the
``float`` packer.  New layer types plug in with :func:`register_packer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import unknown_choice
from ..nn import TypeRegistry


FLOAT_DTYPES = ("float32", "float16")
SIDE_DTYPES = (*FLOAT_DTYPES, "int8")


@dataclass
class PackOptions:
    """How a model is packed.  By default every stored number is exact; the one transform is ``fold_bn``.

    ``fold_bn`` folds each BatchNorm that directly follows a frozen low-bit layer into that
    layer's per-channel scale and bias (the deployment form: ``integer product * scale + bias``;
    equal to conv-then-BN up to float rounding).  ``side_dtype`` stores those per-channel
    scales and biases as float32, float16, or int8 with one float32 step per tensor (smaller,
    not exact); ``float_dtype`` float16 stores every other float tensor at half precision.
    """

    huffman: bool = False  # entropy-code code streams and index gaps when that is smaller
    sparse: bool = True  # store mostly-zero float weights as relative-index sparse entries
    fold_bn: bool = True
    side_dtype: str = "float32"
    float_dtype: str = "float32"

    def __post_init__(self):

        if self.side_dtype not in SIDE_DTYPES:
            raise unknown_choice("side dtype", self.side_dtype, SIDE_DTYPES)
        if self.float_dtype not in FLOAT_DTYPES:
            raise unknown_choice("float dtype", self.float_dtype, FLOAT_DTYPES)


@dataclass
class Packer:
    name: str
    module_type: type
    pack: Callable
    unpack: Callable


PACKERS = TypeRegistry("layer packer")
_BY_NAME: dict[str, Packer] = {}  # the names packed files record


def register_packer(module_type: type, pack: Callable, unpack: Callable, name: str | None = None) -> Packer:
    """Register how ``module_type`` is packed; returns the :class:`Packer`."""
    name = name or f"{module_type.__module__}.{module_type.__qualname__}"
    packer = Packer(name, module_type, pack, unpack)
    PACKERS.register(module_type, packer)
    _BY_NAME[name] = packer
    return packer


def own_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's own persistent parameters and buffers (no children)."""
    return {k: v for k, v in module.state_dict(keep_vars=False).items() if "." not in k}


def _pack_float(module, options):
    return {k: v.detach().cpu().contiguous() for k, v in own_state(module).items()}, {}


def _unpack_float(module, tensors, meta):
    return dict(tensors)


FLOAT_PACKER = Packer("float", nn.Module, _pack_float, _unpack_float)
_BY_NAME["float"] = FLOAT_PACKER


def find_packer(module: nn.Module) -> Packer:
    """The packer of ``module``'s type or nearest registered base; the ``float`` packer otherwise."""
    return PACKERS.find(module) or FLOAT_PACKER


def packer_by_name(name: str) -> Packer | None:
    from . import packers  # noqa: F401  # lazy: the built-in packers register on first use

    return _BY_NAME.get(name)
