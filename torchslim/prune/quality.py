"""Criterion quality: how well each criterion ranks channels compared with the oracle.

The evaluation of Molchanov et al. 2016: on a given model and data subset, compute the
oracle (the exact loss change when each channel is removed) and every criterion, then
the Spearman rank correlation between them, per group and averaged over groups
(weighted by group size), plus the correlation of the global, per-layer normalised
ranking.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .criteria import Context, list_criteria, score_groups
from .graph import build_graph

__all__ = ["spearman", "criterion_quality"]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank)."""
    values = values.double().flatten()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)
    if len(unique) < len(values):
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add(0, inverse, ranks)
        counts = torch.zeros(len(unique), dtype=torch.float64).index_add(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (Pearson correlation of the average ranks); NaN if constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float("nan") if denominator == 0 else float((ra * rb).sum().item() / denominator)


def _normalised(scores):
    return torch.cat([s / s.norm() if s.norm() > 0 else s for s in scores])


def criterion_quality(model: nn.Module, batches, criteria=None, example_inputs=None, seed: int = 0) -> dict:
    """``{criterion: {"per_layer": mean Spearman over groups, "global": Spearman of the
    normalised ranking}}`` against the oracle on ``batches`` of (x, y)."""
    work = copy.deepcopy(model).eval()
    graph = build_graph(work, example_inputs)
    ctx = Context(work, graph, list(batches), seed)
    oracle = score_groups("oracle", graph.groups, ctx)
    groups = [i for i, g in enumerate(graph.groups) if len(g) > 2]
    result = {}
    for name in criteria or list_criteria():
        scores = score_groups(name, graph.groups, ctx)
        weights = torch.tensor([float(len(graph.groups[i])) for i in groups])
        per_group = torch.tensor([spearman(scores[i], oracle[i]) for i in groups])
        valid = ~torch.isnan(per_group)
        per_layer = float((per_group[valid] * weights[valid]).sum() / weights[valid].sum()) if valid.any() \
            else float("nan")
        overall = spearman(_normalised([scores[i] for i in groups]), _normalised([oracle[i] for i in groups]))
        result[name] = {"per_layer": per_layer, "global": overall}
    return result
