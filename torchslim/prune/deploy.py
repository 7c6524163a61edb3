"""Deployment helpers: fold BatchNorm into the layer before it.

After pruning, a conv -> BN pair costs two passes over the feature map where one would
do.  :func:`fold_batchnorm` returns a copy in which every BN that directly follows a
conv or linear layer (and is that layer's only reader) is folded into its weights and
bias and replaced by ``nn.Identity``, so the result is still plain ``nn`` layers that
:func:`torchslim.save` round-trips.  Only valid for inference (BN uses running stats).
The fold itself is :func:`torchslim.nn.fold_batchnorm`; here the pruning tracer finds the pairs.
"""

from __future__ import annotations

from torch import nn

from .. import nn as shared
from .graph import _Tracer

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each conv/linear -> BN pair folded into one layer."""
    return shared.fold_batchnorm(model, types=shared.FLOAT_WEIGHT_LAYERS, tracer=_Tracer())
