"""Taps on the channel groups' feature maps: activation and gradient statistics, and masks.

A tap is inserted on every consumer input of a group (the feature map the next layer
reads).  One pass over a few calibration batches records, per channel position:
the sum of activations, the number of zeros, and per batch the sum of activation x
gradient (for the Taylor criterion).  Masks on the same taps zero chosen channels,
which is how the oracle measures the exact loss change of removing a channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Probe", "TapStats"]


class _Tap(nn.Module):
    def __init__(self, name: str, probe: "Probe"):
        super().__init__()
        self.tap_name = name
        self.probe = probe

    def forward(self, x):
        return self.probe.visit(self.tap_name, x)


class TapStats:
    """Per-position sums for one tap."""

    def __init__(self):
        self.abs_sum = None
        self.zeros = None
        self.count = 0
        self.grad_products: list[torch.Tensor] = []  # one (C,) sum of a*g per batch
        self.grad_counts: list[int] = []

    def add_activation(self, flat: torch.Tensor) -> None:
        act, zeros = flat.abs().sum(1), (flat == 0).sum(1).to(flat.dtype)
        self.abs_sum = act if self.abs_sum is None else self.abs_sum + act
        self.zeros = zeros if self.zeros is None else self.zeros + zeros
        self.count += flat.shape[1]


def _per_channel(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """(N, C, ...) -> (C, N * ...), with the channels in dimension ``dim``."""
    return x.detach().movedim(dim, 0).reshape(x.shape[dim], -1)


class Probe:
    """A copy of the traced model with taps on ``tap_names``; shares the parameters."""

    def __init__(self, graph_module: fx.GraphModule, tap_names, dims: dict | None = None):
        self.dims = dict(dims or {})  # tap name -> channel dimension, when not 1
        self.masks: dict[str, torch.Tensor] = {}
        self.stats: dict[str, TapStats] = {}
        self.recording = False
        new_graph = fx.Graph()
        value_map: dict = {}
        output = new_graph.graph_copy(graph_module.graph, value_map)
        new_graph.output(output)
        module = fx.GraphModule(graph_module, new_graph)
        by_name = {old.name: new for old, new in value_map.items()}
        for index, name in enumerate(sorted(set(tap_names))):
            node = by_name[name]
            target = f"_prune_tap_{index}"
            module.add_submodule(target, _Tap(name, self))
            with new_graph.inserting_after(node):
                tap = new_graph.call_module(target, (node,))
            node.replace_all_uses_with(tap, delete_user_cb=lambda user, tap=tap: user is not tap)
        module.recompile()
        self.module = module

    def visit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(name)
        dim = self.dims.get(name, 1)
        if mask is not None:  # (C,) for every sample, or (N, C) per sample
            shape = [1] * x.dim()
            shape[0], shape[dim] = (-1 if mask.dim() == 2 else 1), x.shape[dim]
            x = x * mask.view(shape)
        if self.recording:
            stats = self.stats.setdefault(name, TapStats())
            stats.add_activation(_per_channel(x, dim))
            if x.requires_grad:
                activation = x.detach()

                def on_grad(grad, stats=stats, activation=activation, dim=dim):
                    product = _per_channel(activation * grad, dim)
                    stats.grad_products.append(product.sum(1))
                    stats.grad_counts.append(product.shape[1])

                x.register_hook(on_grad)
        return x

    def record(self, batches, loss_fn=None, with_grad: bool = True) -> None:
        """Run ``batches`` of (x, y), recording statistics (and gradients when asked)."""
        loss_fn = loss_fn or (lambda model, x, y: F.cross_entropy(model(x), y))
        self.recording = True
        try:
            for x, y in batches:
                with torch.set_grad_enabled(with_grad):
                    loss = loss_fn(self.module, x, y)
                    if with_grad:
                        loss.backward()
        finally:
            self.recording = False

    @torch.no_grad()
    def loss(self, batches, loss_fn=None) -> float:
        """Mean loss over ``batches`` with the current masks."""
        loss_fn = loss_fn or (lambda model, x, y: F.cross_entropy(model(x), y, reduction="sum"))
        total, count = 0.0, 0
        for x, y in batches:
            total += float(loss_fn(self.module, x, y))
            count += len(y)
        return total / max(count, 1)
