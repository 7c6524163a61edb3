"""The surgery that applies a plan: every member of the graph is cut by its module's rule.

Surgery replaces parameters with smaller copies and updates the constructor attributes,
so the result is made of plain ``nn`` layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .rules import find_rule, cut

__all__ = ["apply_removal"]


def _cut_member(module: nn.Module, role: str, index: torch.Tensor) -> None:
    rule = find_rule(module)
    if role.startswith("="):  # a channel count the forward reshapes to: "=hidden_dim"
        setattr(module, role[1:], len(index))
    elif "@" in role:  # a parameter the forward reads directly: "gamma@0"
        attr, _, dim = role.partition("@")
        if rule is not None:
            rule.prune_param(module, attr, int(dim), index)
        else:
            cut(module, attr, index, int(dim))
    elif role == "out":
        rule.prune_out(module, index)
    else:
        rule.prune_in(module, index)


def apply_removal(model: nn.Module, graph, removed: set[int]) -> dict[str, int]:
    """Cut every member of ``graph`` so the channel units in ``removed`` disappear.

    ``model`` must be the module the graph was traced on.  Every output is cut before any
    input, so a rule reads a layer's geometry (e.g. whether a conv is depthwise) before its
    inputs shrink.  Returns the number of positions removed per ``module.role``.
    """
    cut_counts = {}
    order = sorted(graph.members.items(), key=lambda item: item[0][1] == "in")
    for (name, role), member in order:
        keep = [i for i, var in enumerate(member.slots) if graph.root(var) not in removed]
        if len(keep) == len(member.slots):
            continue
        if not keep:
            raise RuntimeError(f"the plan removes every channel of {name} ({role})")
        _cut_member(model.get_submodule(name), role, torch.tensor(keep, dtype=torch.long))
        cut_counts[f"{name}.{role}"] = len(member.slots) - len(keep)
    return cut_counts
