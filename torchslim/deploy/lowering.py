"""Lowering: each compressed layer type's runtime layer, registered by type.

A lowering turns one compressed layer (:class:`torchslim.nn.CompressedLayer`) into the
layer that runs it fast on this machine: a frozen binary conv into a bit-packed conv, a
product-quantized layer into its lookup-table layer.  It is registered for the layer's
type (subclasses inherit it) with :func:`register_lowering`:

* ``lower(module, levels, threads)`` returns the runtime layer, or None where this instance
  cannot be lowered (its outputs must equal the compressed layer's: bit for bit for the
  binary kernels, up to the order of float sums for lookup tables);
* ``needs_input_levels``: the runtime layer needs its input to hold known quantized
  values; ``levels`` are then those values (found on the traced graph), else None;
  ``threads`` is ``compile``'s thread count for the packed kernels (None: torch's at call time);
* ``kernel_threads``: the runtime layer runs on the packed kernels' own thread pool, so a
  compiled model holding one caps torch's threads during a call (see ``compile``);
* ``exact``: its outputs equal the compressed layer's bit for bit (else up to float rounding).

:func:`lower_layers` applies the registry to a model in place; ``torchslim.deploy.compile``
is the verb that returns a lowered copy.  Adding a layer type with a runtime form touches
its module, its packer and its lowering only.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn import CompressedLayer, TypeRegistry, set_submodule
from ..quant.modules import QUANT_LAYERS, ActQuant

__all__ = ["LOWERINGS", "Lowering", "RuntimeLayer", "lower_layers", "register_lowering"]


@dataclass(frozen=True)
class Lowering:
    lower: Callable  # (module, input levels or None, kernel threads or None) -> runtime module or None
    needs_input_levels: bool = False
    kernel_threads: bool = False
    exact: bool = False  # the runtime layer's outputs equal the compressed layer's bit for bit


LOWERINGS = TypeRegistry("lowering")


def register_lowering(module_type: type, lower: Callable, needs_input_levels: bool = False,
                      kernel_threads: bool = False, exact: bool = False) -> Lowering:
    """Register how ``module_type`` becomes its runtime layer; returns the :class:`Lowering`."""
    return LOWERINGS.register(module_type, Lowering(lower, needs_input_levels, kernel_threads, exact))


class RuntimeLayer(nn.Module):
    """Base of the layers a lowering produces: kept whole when a model is traced."""


class LoweringTracer(fx.Tracer):
    """Keeps quantization, compressed and runtime layers as single nodes of the graph."""

    def is_leaf_module(self, module, qualname):
        return isinstance(module, (*QUANT_LAYERS, CompressedLayer, RuntimeLayer)) \
            or super().is_leaf_module(module, qualname)


# Ops through which quantized values stay quantized (same value set).
_VALUE_PRESERVING_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_VALUE_PRESERVING_FUNCTIONS = (torch.flatten, F.max_pool2d, operator.getitem)


def quantized_input_levels(node: fx.Node, modules: dict) -> list | None:
    """The levels of ``node``'s input when its nearest producer, looking back through ops that keep
    a value set (max pooling, flatten, dropout, identity), is an activation quantizer; else None."""
    source = node.args[0] if node.args else None
    while isinstance(source, fx.Node):
        if source.op == "call_module":
            module = modules[source.target]
            if isinstance(module, ActQuant):
                return [float(v) for v in module.levels]
            if not isinstance(module, _VALUE_PRESERVING_MODULES):
                return None
        elif not (source.op == "call_function" and source.target in _VALUE_PRESERVING_FUNCTIONS) and not (
                source.op == "call_method" and source.target in ("flatten", "view", "reshape")):
            return None
        source = source.args[0]
    return None


def _call_sites(model: nn.Module, graph: fx.Graph | None, modules: dict):
    """(path, input levels) of every module call: the graph's call_module nodes, or (without a
    graph) every submodule once, with no levels."""
    if graph is None:
        return [(path, None) for path in modules if path]
    return [(node.target, quantized_input_levels(node, modules)) for node in graph.nodes
            if node.op == "call_module"]


def lower_layers(model: nn.Module, graph: fx.Graph | None = None, threads: int | None = None) -> tuple[list[str], bool]:
    """Replace, in place, every layer with a lowering by its runtime layer.

    With ``graph`` (traced with :class:`LoweringTracer`), lowerings that need their input's
    levels get them; without, those layers stay.  Returns the lowered paths and whether a
    lowered layer runs on the packed kernels' thread pool.
    """
    modules = dict(model.named_modules())
    lowered, kernel_threads = [], False
    for path, levels in _call_sites(model, graph, modules):
        lowering = LOWERINGS.find(modules[path])
        if lowering is None or (lowering.needs_input_levels and not levels):
            continue
        runtime = lowering.lower(modules[path], levels, threads)
        if runtime is None:
            continue
        set_submodule(model, path, runtime)
        lowered.append(path)
        kernel_threads = kernel_threads or lowering.kernel_threads
    return lowered, kernel_threads
