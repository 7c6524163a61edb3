"""The oracle criterion: the exact change of the loss when one channel is removed.

``|C(W, D, h=0) - C(W, D)|`` on the calibration batches D, as in Molchanov et al. 2016:
the channel is zeroed on every feature map its group feeds to a later layer, which is
exactly what removing it does to the network's output.  One forward pass over D per
channel, so keep D small (a few hundred images).
"""

from __future__ import annotations

import torch

__all__ = ["oracle_scores"]


@torch.no_grad()
def oracle_scores(group, ctx) -> torch.Tensor:
    probe = ctx.probe
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        base = getattr(ctx, "_oracle_base", None)
        if base is None:
            probe.masks = {}
            base = ctx._oracle_base = probe.loss(ctx.batches)
        channels = {name: probe.stats[name].act_sum.numel() for name, _ in group.taps if name in probe.stats}
        device = next((p.device for p in ctx.model.parameters()), torch.device("cpu"))
        scores = torch.zeros(len(group))
        for unit in range(len(group)):
            masks = {}
            for name, positions in group.taps:
                if name not in channels:
                    continue
                mask = torch.ones(channels[name], device=device)
                mask[positions[unit]] = 0
                masks[name] = mask
            probe.masks = masks
            scores[unit] = abs(probe.loss(ctx.batches) - base)
    finally:
        probe.masks = {}
        ctx.model.train(was_training)
    return scores
