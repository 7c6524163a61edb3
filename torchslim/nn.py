"""Module helpers every technique shares: one home, so each is written once.

- :func:`set_submodule`: put a module at a dotted path (``features.3``) of a model;
- :func:`weight_layers`: the Linear and Conv layers that carry a weight, by path;
- :func:`record_meta`: merge a technique's provenance into a model's ``torchslim_meta``;
- :func:`pair`: an int or a pair as a pair (kernel sizes, strides, padding);
- :class:`Registry`: name -> entry, refusing an unknown name with the valid ones and a guess;
- :class:`TypeRegistry`: module type -> entry, found through the class hierarchy;
- :class:`CompressedLayer` with :class:`LinearGeometry` / :class:`Conv2dGeometry`: the contract
  every compressed layer keeps (:mod:`torchslim.compressed` has the details);
- :func:`float_copy`: the one route from compressed layers back to plain float layers;
- :func:`fold_batchnorm`: the one BatchNorm fold, with a fold rule per layer type.

``from torch import nn`` inside the package still names torch's ``nn``: this module is
``torchslim.nn`` and is imported by relative name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import unknown_choice

__all__ = [
    "BN_FOLDS", "CompressedLayer", "Conv2dGeometry", "LinearGeometry", "Registry", "TypeRegistry", "float_copy",
    "fold_batchnorm", "geometry_of", "pair", "record_meta", "set_submodule", "weight_layers",
]


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


class TypeRegistry(Registry):
    """A :class:`Registry` of ``{module type: entry}`` whose :meth:`find` walks a module's class
    hierarchy, so a subclass uses its nearest registered base's entry unless it registers its own."""

    def __missing__(self, module_type):
        raise KeyError(module_type)

    def find(self, module: nn.Module | type):
        """The entry of ``module``'s type (or of a type) or of its nearest registered base; None when there is none."""
        for cls in (module if isinstance(module, type) else type(module)).__mro__:
            if cls in self:
                return self[cls]
        return None


# ---------------------------------------------------------------- the compressed-layer contract


@dataclass(frozen=True)
class LinearGeometry:
    """The shape of a fully connected layer: ``y = x W^T + b`` with ``W`` of ``out x in``."""

    in_features: int
    out_features: int
    bias: bool = True

    positions = 1  # kernel positions per output unit

    @property
    def weight_shape(self) -> tuple:
        return (self.out_features, self.in_features)

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias}

    def layer_attributes(self) -> dict:
        """The shape attributes a layer of this geometry exposes (as ``nn.Linear`` does)."""
        return {"in_features": self.in_features, "out_features": self.out_features}

    def float_layer(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        return F.linear(x, weight, bias)


@dataclass(frozen=True)
class Conv2dGeometry:
    """The shape of a 2-d convolution (``padding`` a pair, or ``"same"`` / ``"valid"``)."""

    in_channels: int
    out_channels: int
    kernel_size: tuple
    stride: tuple = (1, 1)
    padding: tuple | str = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = True

    @property
    def positions(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def config(self) -> dict:
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": padding,
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.bias}

    def layer_attributes(self) -> dict:
        """The shape attributes a compressed conv exposes: ``nn.Conv2d``'s, with the channels as features."""
        return {"in_features": self.in_channels, "out_features": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}

    def float_layer(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias)

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def geometry_of(layer: nn.Module) -> LinearGeometry | Conv2dGeometry:
    """The geometry of an ``nn.Linear``, an ``nn.Conv2d`` or a compressed layer."""
    if isinstance(layer, CompressedLayer):
        return layer.geometry
    if isinstance(layer, nn.Linear):
        return LinearGeometry(layer.in_features, layer.out_features, layer.bias is not None)
    padding = layer.padding if isinstance(layer.padding, str) else pair(layer.padding)
    return Conv2dGeometry(layer.in_channels, layer.out_channels, pair(layer.kernel_size), pair(layer.stride),
                          padding, pair(layer.dilation), layer.groups, layer.bias is not None)


class CompressedLayer(nn.Module):
    """The base of every layer that stores its weight compressed (larq's shared quantized-layer base).

    A compressed layer type provides:

    * ``geometry``: the :class:`LinearGeometry` or :class:`Conv2dGeometry` of the float layer it
      stands for;
    * ``weight`` (the float weight it computes with, materialised) and ``bias`` (or None);
    * ``get_config()``: its constructor arguments, which the saved architecture spec records;
    * :meth:`to_float`: the equivalent plain ``nn`` layer (inherited);
    * a packer for the export container (``torchslim.export.register_packer``) and, where a
      runtime layer runs it faster, a lowering (``torchslim.deploy.register_lowering``), both
      registered for its type.
    """

    geometry: LinearGeometry | Conv2dGeometry

    def get_config(self) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def to_float(self) -> nn.Module:
        """The equivalent plain ``nn.Linear`` / ``nn.Conv2d``: the materialised weight and the bias."""
        layer = self.geometry.float_layer()
        layer.weight.copy_(self.weight)
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        return layer


def float_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) in which every compressed layer is its plain float equivalent."""
    dense = copy.deepcopy(model)
    for path, module in list(dense.named_modules()):
        if path and isinstance(module, CompressedLayer):
            set_submodule(dense, path, module.to_float())
    return dense.eval()


# ---------------------------------------------------------------- BatchNorm folding

# layer type -> fold(layer, bn) -> the layer with bn folded in (the same object or a new one)
BN_FOLDS = TypeRegistry("BatchNorm fold")


@torch.no_grad()
def _fold_into_weights(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = layer.weight
    layer.weight = nn.Parameter(weight * scale.view(-1, *([1] * (weight.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    layer.bias = nn.Parameter(bias * scale + shift)
    return layer


FLOAT_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
for _type in FLOAT_WEIGHT_LAYERS:
    BN_FOLDS.register(_type, _fold_into_weights)


class _LeafTracer(fx.Tracer):
    """Keeps compressed layers and layers with a fold rule as single nodes."""

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return isinstance(module, CompressedLayer) or BN_FOLDS.find(module) is not None \
            or super().is_leaf_module(module, qualname)


def _foldable_pairs(model: nn.Module, graph: fx.Graph, types: tuple) -> list[tuple[str, str]]:
    """(layer path, BatchNorm path) of each BN fed only by a layer of ``types`` with a fold rule."""
    modules, pairs = dict(model.named_modules()), []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer, bn = modules.get(source.target), modules[node.target]
        if not isinstance(layer, types) or BN_FOLDS.find(layer) is None:
            continue
        if not bn.track_running_stats or bn.running_mean is None or layer.weight.shape[0] != bn.num_features:
            continue
        pairs.append((source.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module, types: tuple | None = None, tracer: fx.Tracer | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm that directly follows a layer (its only
    reader) folded into that layer and replaced by ``nn.Identity``; only valid for inference.

    ``types`` limits the layers folded into (default: every type with a rule in :data:`BN_FOLDS`);
    ``tracer`` (default: one keeping compressed layers whole) finds which layer feeds which BN.
    """
    folded = copy.deepcopy(model).eval()
    graph = (tracer or _LeafTracer()).trace(folded)
    for layer_path, bn_path in _foldable_pairs(folded, graph, types or tuple(BN_FOLDS)):
        layer = folded.get_submodule(layer_path)
        set_submodule(folded, layer_path, BN_FOLDS.find(layer)(layer, folded.get_submodule(bn_path)))
        set_submodule(folded, bn_path, nn.Identity())
    return folded
