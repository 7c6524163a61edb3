"""Magnitude masks: per layer or one global threshold, kept only while fine-tuning.

A mask is a boolean tensor the shape of a layer's weight.  :class:`MaskSet` holds
one per layer path; ``apply`` zeroes the pruned weights in place and ``on_step``
is the hook :func:`torchslim.train.fit` calls after each optimizer step, so
momentum and weight decay can never revive a pruned weight.  The end product is
the plain network with exact zeros: no mask objects survive fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError, unknown_choice
from ..nn import FLOAT_WEIGHT_LAYERS, Registry, fold_batchnorm

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
SCOPES = ("layer", "global")


def prunable_layers(model: nn.Module, exclude=()) -> dict[str, nn.Module]:
    """``{path: layer}`` for every Linear/Conv weight not excluded by path or prefix."""
    layers = {}
    for path, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and not any(
            path == ex or path.startswith(ex + ".") for ex in exclude
        ):
            layers[path] = module
    if exclude:
        known = {path for path, _ in model.named_modules()}
        unknown = [ex for ex in exclude if ex not in known]
        if unknown:
            raise unknown_choice("layer", unknown[0], [p for p in known if p])
    return layers


def _check_sparsity(value: float, what: str = "sparsity") -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise UserError(f"{what} must be in [0, 1), got {value}")
    return value


def _keep_top(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = int(round((1.0 - sparsity) * weight.numel()))
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    if keep > 0:
        mask[weight.detach().abs().reshape(-1).topk(keep, sorted=False).indices] = True
    return mask.reshape(weight.shape)


def weight_magnitudes(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``|w|`` of each layer's weight as it is."""
    return {path: layer.weight.detach().abs() for path, layer in layers.items()}


def folded_magnitudes(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``|w|`` as deployed: the BatchNorm after a layer folded in, ``|w| * |gamma| / sqrt(var + eps)`` per output.

    A BatchNorm makes its layer's function blind to the scale of each output's
    weights, so the raw ``|w|`` of two outputs are not comparable; the folded
    weights are the ones the deployed (and weight-shared) layer computes with.
    Layers without a BatchNorm after them score as ``|w|``.
    """
    folded = dict(fold_batchnorm(model, types=FLOAT_WEIGHT_LAYERS).named_modules())
    return {path: folded[path].weight.detach().abs() for path in layers}


# criterion name -> (model, {path: layer}) -> {path: non-negative score per weight}
CRITERIA = Registry("sparsity criterion", {"magnitude": weight_magnitudes, "folded": folded_magnitudes})


def magnitude_masks(layers: dict[str, nn.Module], sparsity, scope: str = "layer",
                    scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Masks keeping the largest-magnitude weights (or the largest ``scores``, one per weight).

    ``sparsity`` is a fraction or ``{path: fraction}`` (per-layer targets, scope
    ``layer`` only).  ``global`` ranks all weights of all layers together.
    """
    if scores is None:
        scores = weight_magnitudes(None, layers)
    if scope not in SCOPES:
        raise unknown_choice("sparsity scope", scope, SCOPES)
    if isinstance(sparsity, dict):
        if scope == "global":
            raise UserError("per-layer sparsity targets need scope 'layer'")
        return {p: _keep_top(scores[p], _check_sparsity(sparsity.get(p, 0.0))) for p in layers}
    sparsity = _check_sparsity(sparsity)
    if scope == "layer":
        return {path: _keep_top(scores[path], sparsity) for path in layers}
    flat = torch.cat([scores[path].reshape(-1) for path in layers])
    keep = int(round((1.0 - sparsity) * flat.numel()))
    selected = torch.zeros(flat.numel(), dtype=torch.bool)
    if keep > 0:
        selected[flat.topk(keep, sorted=False).indices] = True
    masks, start = {}, 0
    for path, module in layers.items():
        count = module.weight.numel()
        masks[path] = selected[start:start + count].reshape(module.weight.shape)
        start += count
    return masks


class MaskSet:
    """Masks by layer path; ``apply(model)`` zeroes pruned weights, ``on_step`` re-applies."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = dict(masks)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for path, mask in self.masks.items():
            weight = model.get_submodule(path).weight
            weight.mul_(mask.to(weight.device, weight.dtype))

    def on_step(self, model: nn.Module) -> None:
        self.apply(model)

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / max(total, 1)

    def __len__(self) -> int:
        return len(self.masks)
