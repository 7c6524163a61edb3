"""BatchNorm recalibration: re-estimate running statistics after the network changed
(channels removed by pruning, weights and activations quantized).

Removing channels changes what every later layer sees, so the running mean and variance
a BatchNorm learnt on the full network no longer describe its input.  In a plain chain
the error is small; where a residual add sums pruned and unpruned branches it compounds
block after block and eval-mode accuracy can collapse before any fine-tune.  Running a
few calibration batches in train mode (BatchNorm layers only, no gradients, cumulative
average instead of the momentum) fixes the statistics; weights are untouched.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Reset and re-estimate the running statistics of every BatchNorm of ``model`` on
    ``batches`` (an iterable of ``(x, y)`` or of ``x``); returns how many layers changed.

    The running mean becomes the average of the per-batch means (the exact batch mean
    with one batch).  Other layers (dropout) stay in eval mode; the model's training flag
    and each layer's momentum are restored.
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    batches = list(batches or [])
    if not norms or not batches:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average over the batches
            norm.train()
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
