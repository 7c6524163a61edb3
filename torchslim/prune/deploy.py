"""Deployment helpers: fold BatchNorm into the layer before it.

After pruning, a conv -> BN pair costs two passes over the feature map where one would
do.  :func:`fold_batchnorm` returns a copy in which every BN that directly follows a
conv or linear layer (and is that layer's only reader) is folded into its weights and
bias and replaced by ``nn.Identity``, so the result is still plain ``nn`` layers that
:func:`torchslim.save` round-trips.  Only valid for inference (BN uses running stats).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..nn import set_submodule
from .graph import _Tracer

__all__ = ["fold_batchnorm"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
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


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each conv/linear -> BN pair folded into one layer."""
    folded = copy.deepcopy(model).eval()
    graph = _Tracer().trace(folded)
    modules = dict(folded.named_modules())
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer, bn = modules.get(source.target), modules[node.target]
        if not isinstance(layer, _FOLDABLE) or not bn.track_running_stats or bn.running_mean is None:
            continue
        if layer.weight.shape[0] != bn.num_features:
            continue
        _fold(layer, bn)
        set_submodule(folded, node.target, nn.Identity())
    return folded
