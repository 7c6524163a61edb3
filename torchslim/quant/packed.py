"""BatchNorm folded into frozen low-bit layers: the deployment form of a frozen model.

Each BatchNorm that directly follows a frozen layer becomes part of that layer's scale and bias,
so a binary conv is ``integer product * scale + bias``, the form the bit-serial kernels use.
The packed deployment file itself is :mod:`torchslim.export.frozen`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn import set_submodule
from .modules import FrozenConv2d, FrozenLinear, symbolic_trace

__all__ = ["fold_frozen_batchnorm"]


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
def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
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
        set_submodule(folded, layer_name, replacement)
        set_submodule(folded, bn_name, nn.Identity())
    return folded
