"""BatchNorm folded into frozen low-bit layers: the deployment form of a frozen model.

Each BatchNorm that directly follows a frozen layer becomes part of that layer's scale and bias,
so a binary conv is ``integer product * scale + bias``, the form the bit-serial kernels use
(the fold rule is :func:`torchslim.quant.modules.fold_into_scale`, applied by the one
:func:`torchslim.nn.fold_batchnorm`).  The packed deployment file itself is :mod:`torchslim.export.frozen`.
"""

from __future__ import annotations

from torch import nn

from ..nn import fold_batchnorm
from .modules import FROZEN_LAYERS, QuantTracer

__all__ = ["fold_frozen_batchnorm"]


def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with each BatchNorm that follows a frozen layer folded into its scale and bias."""
    return fold_batchnorm(model, types=FROZEN_LAYERS, tracer=QuantTracer())
