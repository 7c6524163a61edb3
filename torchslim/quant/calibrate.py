r"""Per-layer activation scales for level quantizers, fitted on data.

HWGQ's levels are those of a unit half-normal, which is what a BatchNorm output
looks like in a network trained with the quantizer.  A float network converted
after training has BatchNorm gammas and betas of any size, so its activations
can sit anywhere on that fixed grid.  :func:`calibrate_act_scales` fits one scale
per activation quantizer (per tensor, so the level set stays shared by all
channels, as the binary kernels need) and writes ``s * levels`` and
``s * thresholds`` into the quantizer's buffers.

The scale minimises the squared error between the ReLU of the input and its
quantization with the fixed level shape,

.. math:: \min_s \sum_x \big(\max(x, 0) - s\, q_{i(x / s)}\big)^2,

by Lloyd's two steps with the shape held fixed: assign every value to its cell
with the current :math:`s`, then :math:`s = \sum x^+ q_i / \sum q_i^2` (the least
squares scale for that assignment).  Neither step increases the error.
"""

from __future__ import annotations

import torch
from torch import nn

from .modules import ActQuant
from .altupdate import recalibrate_bn

__all__ = ["fit_level_scale", "level_mse", "calibrate_act_scales", "scalable"]


def scalable(module: nn.Module) -> bool:
    """An activation quantizer whose levels may be rescaled (zero-anchored, non-negative levels)."""
    return isinstance(module, ActQuant) and module.quantizer.needs_bn


def level_mse(x: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor, ties_up: bool = False) -> float:
    """Mean squared error between ``relu(x)`` and its quantization to ``levels``."""
    x = x.detach()
    codes = torch.bucketize(x, thresholds, right=ties_up)
    return float((x.clamp_min(0) - levels[codes]).pow(2).mean())


@torch.no_grad()
def fit_level_scale(x: torch.Tensor, levels, thresholds, ties_up: bool = False, iterations: int = 50,
                    tol: float = 1e-7) -> float:
    """The scale ``s`` minimising ``||relu(x) - s * Q_shape(x / s)||^2`` (see the module doc).

    ``levels`` / ``thresholds``: the unit shape (``levels[0] == 0``).  Returns 1.0 for an
    input with no positive value.
    """
    x = x.detach().flatten().double()
    x = x[x > 0]
    levels = torch.as_tensor(levels, dtype=torch.float64, device=x.device)
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=x.device)
    if x.numel() == 0:
        return 1.0
    scale = 1.0
    for _ in range(iterations):
        q = levels[torch.bucketize(x, thresholds * scale, right=ties_up)]
        den = float((q * q).sum())
        if den == 0.0:  # everything fell in level 0: shrink until the grid reaches the data
            scale = scale / 2
            continue
        new = float((x * q).sum()) / den
        if abs(new - scale) <= tol * scale:
            return new
        scale = new
    return scale


def _inputs_of(model: nn.Module, names: list[str], batches, per_batch: int) -> dict:
    """Inputs of the named modules over ``batches`` (one forward pass each), at most ``per_batch``
    evenly strided values per module and batch."""
    captured = {name: [] for name in names}

    def keep(name):
        def hook(module, inputs, output):
            values = inputs[0].detach().flatten()
            captured[name].append(values[:: -(-values.numel() // per_batch)])
        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in names]
    try:
        for x in batches:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values) for name, values in captured.items()}


@torch.no_grad()
def calibrate_act_scales(model: nn.Module, batches, max_values: int = 2_000_000) -> dict[str, float]:
    """Fit every scalable :class:`ActQuant` of ``model`` in place; returns ``{name: scale}``.

    The BatchNorm statistics are re-estimated on ``batches`` first, so each quantizer's input
    is its BatchNorm's ``gamma * unit + beta`` whatever the scales before it; all scales are
    then fitted from one pass (at most ``max_values`` values per layer, evenly strided) and
    the BatchNorm statistics are re-estimated again for the new scales.
    """
    batches = list(batches)
    names = [name for name, module in model.named_modules() if scalable(module)]
    if not names:
        return {}
    recalibrate_bn(model, batches)
    was_training = model.training
    model.eval()
    try:
        inputs = _inputs_of(model, names, batches, max(1, max_values // len(batches)))
    finally:
        model.train(was_training)
    scales = {}
    for name in names:
        act = model.get_submodule(name)
        unit_levels, unit_thresholds = act.unit_levels()
        scales[name] = fit_level_scale(inputs[name], unit_levels, unit_thresholds, act.quantizer.ties_up)
        act.set_scale(scales[name])
    recalibrate_bn(model, batches)
    return scales
