"""Fold each BatchNorm into the Linear/Conv just before it (deployment form).

``y = gamma (W x + b - mean) / sqrt(var + eps) + beta`` is the affine layer
``W' = W * gamma / sqrt(var + eps)`` (per output unit) with bias
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BatchNorm becomes
``nn.Identity``.  Outputs agree to float rounding.  Folding *before* pruning and
weight sharing removes the BatchNorm parameters from the compressed file, as a
deployed network would have them.  Only direct ``Sequential`` neighbours are
folded (every zoo model's conv-BN and linear-BN pairs); others are left alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_FOLDABLE = {nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d}


def _with_bias(layer: nn.Module) -> nn.Module:
    if layer.bias is not None:
        return layer
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, layer.out_features, bias=True)
    else:
        new = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, bias=True)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        new.bias.zero_()
    return new


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every foldable (layer, BatchNorm) pair folded; returns the copy."""
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            layer, norm = parent._modules[first], parent._modules[second]
            if type(layer) not in _FOLDABLE or type(norm) is not _FOLDABLE[type(layer)] or not norm.track_running_stats:
                continue
            layer = _with_bias(layer)
            scale = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / torch.sqrt(
                norm.running_var + norm.eps)
            shift = norm.bias if norm.affine else torch.zeros_like(norm.running_mean)
            layer.weight.mul_(scale.reshape(-1, *([1] * (layer.weight.ndim - 1))))
            layer.bias.copy_((layer.bias - norm.running_mean) * scale + shift)
            parent._modules[first] = layer
            parent._modules[second] = nn.Identity()
    return folded
