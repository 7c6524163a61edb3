"""Importance criteria: one registry, each a small function ``(group, context) -> Tensor[units]``.

Higher means more important (kept longer).  Weight criteria read the group's layers;
data criteria read statistics the :class:`Context` records once, on a few calibration
batches, for every group at the same time.

============== ===========================================================================
l1, l2         L1 / L2 norm of every weight the channel owns in its coupled group: the
               producing filters, BatchNorm scales and the consumers' input slices
               (group-level magnitude, as DepGraph ranks groups); with
               ``whole_group=False`` only the producing filters (Li et al. 2017,
               arXiv:1608.08710)
mean-act       mean absolute activation of the feature map the next layer reads (after a
               ReLU: the mean activation)
apoz           1 - APoZ, the share of non-zero activations (Hu et al. 2016)
taylor         |mean over batch and space of activation x gradient| per channel, averaged
               over batches, L2-normalised per layer (Molchanov et al. 2016,
               arXiv:1611.06440)
taylor-weight  |sum of weight x gradient| over the channel's parameters
taylor-group   sum of |weight x gradient| over every parameter of the coupled group: the
               producing filters and biases, BatchNorm scales and shifts and the
               consumers' input slices (group-level Taylor, as in DepGraph, Fang et al. 2023)
bn-scale       |gamma| of the group's BatchNorm layers (Network Slimming, Liu et al. 2017)
oicsr          summed squared weights of the out-channel in layer l and the matching
               in-channel in layer l+1, over the whole coupled group (OICSR, CVPR 2019)
random         uniform random, the baseline (seeded)
oracle         |C(W, D, h=0) - C(W, D)|: the exact loss change when the channel is zeroed
============== ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UserError
from ..nn import Registry
from .oracle import oracle_scores
from .probe import Probe

__all__ = ["CRITERIA", "Criterion", "Context", "register_criterion", "list_criteria", "get_criterion",
           "score_groups"]


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable
    needs_data: bool = False
    doc: str = ""


CRITERIA = Registry("criterion")


def register_criterion(name: str, needs_data: bool = False):
    """Decorator: register ``fn(group, context) -> Tensor[len(group)]`` under ``name``."""

    def decorator(fn):
        CRITERIA.register(name, Criterion(name, fn, needs_data, (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return decorator


def list_criteria() -> list[str]:
    return list(CRITERIA)


def get_criterion(name: str) -> Criterion:
    return CRITERIA[name]


class Context:
    """What criteria may read: the working model, its graph, calibration batches, a seed.

    ``whole_group``: the weight criteria score every layer of a coupled group, not only
    the producing filters.
    """

    def __init__(self, model: nn.Module, graph, batches=None, seed: int = 0, whole_group: bool = True):
        self.model = model
        self.graph = graph
        self.batches = list(batches or [])
        self.seed = seed
        self.whole_group = whole_group
        self._probe = None

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def is_producer(self, member) -> bool:
        """A conv/linear output whose layer also reads channels (not a depthwise pass-through)."""
        return member.role == "out" and (member.module, "in") in self.graph.members

    @property
    def probe(self):
        """The calibration pass, run once on first use."""
        if self._probe is None:
            if not self.batches:
                raise UserError("this criterion needs calibration data (give --data or calibration batches)")
            taps = {name for group in self.graph.groups for name, _ in group.taps}
            self._probe = Probe(self.graph.graph_module, taps, getattr(self.graph, "tap_dims", None))
            was_training = self.model.training
            self.model.eval()
            try:
                self._probe.record(self.batches)
            finally:
                self.model.train(was_training)
        return self._probe


def unit_sum(values: torch.Tensor, positions: list[list[int]]) -> torch.Tensor:
    """Sum of per-position ``values`` over each unit's positions."""
    return torch.stack([values[p].sum() if p else values.new_zeros(()) for p in positions])


def position_weights(module: nn.Module, role: str, detach: bool = True, tensor=None) -> torch.Tensor | None:
    """The weights of a conv/linear (or ``tensor``, shaped like them) as one row per channel
    position of ``role``."""
    weight = getattr(module, "weight", None)
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or weight is None:
        return None
    weight = tensor if tensor is not None else weight.detach() if detach else weight
    if role == "out":
        return weight.reshape(weight.shape[0], -1)
    if isinstance(module, nn.Linear):
        return weight.t()
    groups = module.groups
    per_out, per_in = weight.shape[0] // groups, weight.shape[1]
    return weight.reshape(groups, per_out, per_in, -1).permute(0, 2, 1, 3).reshape(groups * per_in, -1)


def _weight_score(group, ctx, reduce, roles=("out",), producers_only=True) -> torch.Tensor:
    total = torch.zeros(len(group))
    for member, positions in zip(group.members, group.positions):
        if member.role not in roles or (producers_only and member.role == "out" and not ctx.is_producer(member)):
            continue
        rows = position_weights(ctx.module(member.module), member.role)
        if rows is not None:
            total += unit_sum(reduce(rows.float()).cpu(), positions)
    return total


def _bn_score(group, ctx, reduce) -> torch.Tensor:
    total = torch.zeros(len(group))
    for member, positions in zip(group.members, group.positions):
        module = ctx.module(member.module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            total += unit_sum(reduce(module.weight.detach().float().cpu()), positions)
    return total


def _magnitude(group, ctx, reduce) -> torch.Tensor:
    """Sum of ``reduce(rows)`` over the producing filters or, with ``ctx.whole_group``, over
    every conv/linear slice and BatchNorm scale of the group."""
    if not getattr(ctx, "whole_group", True):
        return _weight_score(group, ctx, reduce)
    rows_total = _weight_score(group, ctx, reduce, roles=("out", "in"), producers_only=False)
    return rows_total + _bn_score(group, ctx, lambda w: reduce(w.unsqueeze(1)))


@register_criterion("l1")
def l1(group, ctx):
    """L1 norm over the coupled group (producers, BN scales, consumer slices)."""
    return _magnitude(group, ctx, lambda rows: rows.abs().sum(1))


@register_criterion("l2")
def l2(group, ctx):
    """L2 norm over the coupled group (producers, BN scales, consumer slices)."""
    return _magnitude(group, ctx, lambda rows: rows.pow(2).sum(1)).sqrt()


@register_criterion("oicsr")
def oicsr(group, ctx):
    """Out-in-channel energy over the whole coupled group (OICSR)."""
    return _weight_score(group, ctx, lambda rows: rows.pow(2).sum(1), roles=("out", "in"), producers_only=False)


@register_criterion("bn-scale")
def bn_scale(group, ctx):
    """|gamma| of the group's BatchNorm layers (Network Slimming); L2 norm where there is none."""
    found = any(isinstance(ctx.module(m.module), nn.modules.batchnorm._BatchNorm)
                and ctx.module(m.module).weight is not None for m in group.members)
    return _bn_score(group, ctx, torch.abs) if found else l2(group, ctx)


@register_criterion("random")
def random(group, ctx):
    """Uniform random scores (seeded): the baseline."""
    generator = torch.Generator().manual_seed(ctx.seed * 100003 + group.index)
    return torch.rand(len(group), generator=generator)


def _tap_mean(group, ctx, value) -> torch.Tensor:
    """Average over the group's taps of ``value(stats, positions) -> Tensor[units]``."""
    scores = [value(ctx.probe.stats[name], positions) for name, positions in group.taps
              if name in ctx.probe.stats]
    if not scores:
        return torch.zeros(len(group))
    return torch.stack(scores).mean(0)


def _sizes(positions) -> torch.Tensor:
    return torch.tensor([max(len(p), 1) for p in positions], dtype=torch.float32)


@register_criterion("mean-act", needs_data=True)
def mean_activation(group, ctx):
    """Mean absolute activation of the feature map the next layer reads."""
    return _tap_mean(group, ctx, lambda s, pos: unit_sum(s.abs_sum.float().cpu(), pos) / (s.count * _sizes(pos)))


@register_criterion("apoz", needs_data=True)
def apoz(group, ctx):
    """1 - the average percentage of zeros (APoZ) of the feature map."""
    return _tap_mean(group, ctx, lambda s, pos: 1 - unit_sum(s.zeros.float().cpu(), pos) / (s.count * _sizes(pos)))


def _taylor_tap(stats, positions) -> torch.Tensor:
    per_batch = [unit_sum(p.float().cpu(), positions).abs() / (n * _sizes(positions))
                 for p, n in zip(stats.grad_products, stats.grad_counts)]
    return torch.stack(per_batch).mean(0) if per_batch else torch.zeros(len(positions))


@register_criterion("taylor", needs_data=True)
def taylor(group, ctx):
    """First-order Taylor on activations, L2-normalised per layer (Molchanov et al. 2016)."""
    scores = _tap_mean(group, ctx, _taylor_tap)
    norm = scores.norm()
    return scores / norm if norm > 0 else scores


@register_criterion("taylor-weight", needs_data=True)
def taylor_weight(group, ctx):
    """|sum of weight x gradient| over the parameters that produce the channel."""
    ctx.probe  # gradients come from the calibration pass
    total = torch.zeros(len(group))
    for member, positions in zip(group.members, group.positions):
        if member.role != "out":
            continue
        module = ctx.module(member.module)
        for param in (getattr(module, "weight", None), getattr(module, "bias", None)):
            if param is None or param.grad is None:
                continue
            product = (param.detach() * param.grad).reshape(param.shape[0], -1).sum(1)
            total += unit_sum(product.float().cpu(), positions)
    return total.abs()


def _saliency(param) -> torch.Tensor | None:
    """|w x dL/dw| elementwise, or None without a gradient."""
    if param is None or param.grad is None:
        return None
    return (param.detach() * param.grad).abs().float()


@register_criterion("taylor-group", needs_data=True)
def taylor_group(group, ctx):
    """Sum of |weight x gradient| over every parameter of the coupled group."""
    ctx.probe  # gradients come from the calibration pass
    total = torch.zeros(len(group))
    for member, positions in zip(group.members, group.positions):
        module = ctx.module(member.module)
        weight = _saliency(getattr(module, "weight", None))
        if weight is None:
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            per_position = [weight, _saliency(module.bias)]
        else:
            rows = position_weights(module, member.role, tensor=weight)
            if rows is None:
                continue
            per_position = [rows.sum(1), _saliency(module.bias) if member.role == "out" else None]
        for values in per_position:
            if values is not None:
                total += unit_sum(values.cpu(), positions)
    return total


@register_criterion("oracle", needs_data=True)
def oracle(group, ctx):
    """The exact loss change when the channel is zeroed, on the calibration batches."""
    return oracle_scores(group, ctx)


def score_groups(criterion: str, groups, ctx) -> list[torch.Tensor]:
    """Scores of every group under ``criterion`` (a registered name)."""
    fn = get_criterion(criterion).fn
    scores = []
    for group in groups:
        value = torch.as_tensor(fn(group, ctx), dtype=torch.float32).flatten()
        if value.numel() != len(group):
            raise ValueError(f"criterion {criterion} gave {value.numel()} scores for {len(group)} channels")
        scores.append(torch.nan_to_num(value, nan=0.0))
    return scores
