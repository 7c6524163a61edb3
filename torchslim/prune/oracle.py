"""The oracle criterion: the exact change of the loss when one channel is removed.

``|C(W, D, h=0) - C(W, D)|`` on the calibration batches D, as in Molchanov et al. 2016:
the channel is zeroed on every feature map its group feeds to a later layer, which is
exactly what removing it does to the network's output.  Several channels are evaluated
in one forward pass: the batch is repeated once per channel, each copy with its own
mask.  The cost is one forward pass over D per channel, so keep D small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["oracle_scores"]

SAMPLES_PER_PASS = 512


def _losses(probe, x, y) -> torch.Tensor:
    return F.cross_entropy(probe.module(x), y, reduction="none")


@torch.no_grad()
def oracle_scores(group, ctx) -> torch.Tensor:
    probe = ctx.probe
    was_training = ctx.model.training
    ctx.model.eval()
    channels = {name: probe.stats[name].abs_sum.numel() for name, _ in group.taps if name in probe.stats}
    totals = torch.zeros(len(group), dtype=torch.float64)
    count = 0
    try:
        for x, y in ctx.batches:
            probe.masks = {}
            base = _losses(probe, x, y).double().sum()
            per_pass = max(1, SAMPLES_PER_PASS // len(y))
            for start in range(0, len(group), per_pass):
                units = range(start, min(start + per_pass, len(group)))
                masks = {}
                for name, positions in group.taps:
                    if name not in channels:
                        continue
                    mask = torch.ones(len(units), len(y), channels[name], device=x.device)
                    for row, unit in enumerate(units):
                        mask[row, :, positions[unit]] = 0
                    masks[name] = mask.view(len(units) * len(y), -1)
                probe.masks = masks
                repeated = x.repeat(len(units), *([1] * (x.dim() - 1)))
                losses = _losses(probe, repeated, y.repeat(len(units))).double().view(len(units), len(y))
                totals[start:start + len(units)] += losses.sum(1) - base
            count += len(y)
    finally:
        probe.masks = {}
        ctx.model.train(was_training)
    return (totals / max(count, 1)).abs().float()
