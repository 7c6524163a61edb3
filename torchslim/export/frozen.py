"""Packed deployment files for frozen low-bit models: the packed container with deployment defaults.

A frozen model's codes are stored at 1 bit per weight for {-1,+1}, 2 for ternary and k bits for
DoReFa codes, with per-channel scales and biases, the float first and last layers and the
architecture: the same file ``torchslim export --format packed`` writes, checksummed and read back
by :func:`torchslim.load`.  Here the defaults are the deployment form:

* ``fold_bn`` (default): each BatchNorm that directly follows a frozen layer is folded into that
  layer's scale and bias (:func:`torchslim.quant.packed.fold_frozen_batchnorm`), so a binary conv is
  ``integer product * scale + bias``, the form the bit-serial kernels use;
* ``float_dtype``: float32 (the packed model computes what the folded frozen model computes) or
  float16 for every float tensor;
* ``side_dtype`` (default: ``float_dtype``): the binary layers' per-channel scale and bias alone
  as float32, float16 or int8 (symmetric, one float32 step per layer and tensor).

Files of the earlier quantization-only layout are refused with a message to write them again.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..io.serialize import read_header
from ..quant.modules import FrozenConv2d, FrozenLinear
from . import packed
from .registry import PackOptions

__all__ = ["pack_options", "save_frozen", "load_frozen", "frozen_size"]


def pack_options(float_dtype: str = "float32", fold_bn: bool = True, side_dtype: str | None = None):
    """The :class:`torchslim.export.PackOptions` of a frozen model's deployment file."""
    return PackOptions(fold_bn=fold_bn, float_dtype=float_dtype, side_dtype=side_dtype or float_dtype)


def _frozen_only(model: nn.Module) -> None:
    if not any(isinstance(m, FrozenConv2d | FrozenLinear) for m in model.modules()):
        raise UserError("save_frozen needs a frozen model: call torchslim.quant.freeze first")


def save_frozen(model: nn.Module, path, float_dtype: str = "float32", fold_bn: bool = True,
                side_dtype: str | None = None, **meta) -> int:
    """Write a frozen model as a packed file (atomically); returns its size in bytes."""
    _frozen_only(model)
    return packed.save_packed(model, path, pack_options(float_dtype, fold_bn, side_dtype), **meta)


def frozen_size(model: nn.Module, float_dtype: str = "float32", fold_bn: bool = True,
                side_dtype: str | None = None, **meta) -> int:
    """Bytes :func:`save_frozen` writes for ``model``."""
    _frozen_only(model)
    return len(packed.pack_model(model, pack_options(float_dtype, fold_bn, side_dtype), **meta))


def load_frozen(path) -> nn.Module:
    """Rebuild the frozen (float32) model from a packed file, in eval mode."""
    if not packed.is_packed(path):
        header = read_header(path)  # a clear error for a missing or foreign file
        if "packed" in header:
            raise UserError(f"{path} has the earlier quantization-only packed layout; write it again with "
                            f"torchslim quantize --packed or torchslim export --format packed")
        raise UserError(f"{path} is not a packed file; load it with torchslim.load")
    return packed.load_packed(path)
