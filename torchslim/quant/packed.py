"""Packed deployment files for frozen low-bit models: the packed container of :mod:`torchslim.export`.

A frozen model's codes are stored at 1 bit per weight for {-1,+1}, 2 for ternary and k bits for
DoReFa codes, with per-channel scales and biases, the float first and last layers and the
architecture: the same file ``torchslim export --format packed`` writes, checksummed and read back
by :func:`torchslim.load`.  Here the defaults are the deployment form:

* ``fold_bn`` (default): each BatchNorm that directly follows a frozen layer is folded into that
  layer's scale and bias (:func:`fold_batchnorm`), so a binary conv is
  ``integer product * scale + bias``, the form the bit-serial kernels use;
* ``float_dtype``: float32 (the packed model computes what the folded frozen model computes) or
  float16 for every float tensor;
* ``side_dtype`` (default: ``float_dtype``): the binary layers' per-channel scale and bias alone
  as float32, float16 or int8 (symmetric, one float32 step per layer and tensor).

Files of the earlier quantization-only layout are refused with a message to write them again.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UserError
from .modules import FrozenConv2d, FrozenLinear, symbolic_trace

__all__ = ["fold_batchnorm", "pack_options", "save_packed", "load_packed", "packed_size"]


def _bn_after_frozen(model: nn.Module) -> list[tuple[str, str]]:
    graph_module = symbolic_trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d | nn.BatchNorm1d):
            continue
        source = node.args[0]
        if getattr(source, "op", None) == "call_module" and len(source.users) == 1 \
                and isinstance(modules[source.target], FrozenConv2d | FrozenLinear):
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with each BatchNorm that follows a frozen layer folded into its scale and bias."""
    folded = copy.deepcopy(model).eval()
    for layer_name, bn_name in _bn_after_frozen(folded):
        layer, bn = folded.get_submodule(layer_name), folded.get_submodule(bn_name)
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * gain
        if layer.bias is not None:
            bias = bias + layer.bias * gain
        replacement = type(layer)(**{**layer.get_config(), "bias": True})
        replacement.load_codes(layer.codes, layer.scale * gain, bias)
        parent, _, child = layer_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, child, replacement)
        parent, _, child = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, child, nn.Identity())
    return folded


def pack_options(float_dtype: str = "float32", fold_bn: bool = True, side_dtype: str | None = None):
    """The :class:`torchslim.export.PackOptions` of a frozen model's deployment file."""
    from ..export import PackOptions

    return PackOptions(fold_bn=fold_bn, float_dtype=float_dtype, side_dtype=side_dtype or float_dtype)


def _frozen_only(model: nn.Module) -> None:
    if not any(isinstance(m, FrozenConv2d | FrozenLinear) for m in model.modules()):
        raise UserError("save_packed needs a frozen model: call torchslim.quant.freeze first")


def save_packed(model: nn.Module, path, float_dtype: str = "float32", fold_bn: bool = True,
                side_dtype: str | None = None, **meta) -> int:
    """Write a frozen model as a packed file (atomically); returns its size in bytes."""
    from ..export import save_packed as export_packed

    _frozen_only(model)
    return export_packed(model, path, pack_options(float_dtype, fold_bn, side_dtype), **meta)


def packed_size(model: nn.Module, float_dtype: str = "float32", fold_bn: bool = True,
                side_dtype: str | None = None, **meta) -> int:
    """Bytes :func:`save_packed` writes for ``model``."""
    from ..export import pack_model

    _frozen_only(model)
    return len(pack_model(model, pack_options(float_dtype, fold_bn, side_dtype), **meta))


def load_packed(path) -> nn.Module:
    """Rebuild the frozen (float32) model from a packed file, in eval mode."""
    from ..export import is_packed
    from ..export import load_packed as export_load
    from ..io.serialize import read_header

    if not is_packed(path):
        header = read_header(path)  # a clear error for a missing or foreign file
        if "packed" in header:
            raise UserError(f"{path} has the earlier quantization-only packed layout; write it again with "
                            f"torchslim quantize --packed or torchslim export --format packed")
        raise UserError(f"{path} is not a packed file; load it with torchslim.load")
    return export_load(path)
