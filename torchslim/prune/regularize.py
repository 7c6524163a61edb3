"""Sparsity regularisers that make channels prunable before they are pruned.

* ``oicsr``: the out-in-channel group lasso of OICSR (Li et al., CVPR 2019).  For every
  channel unit, the weights of its out-channel in layer l and of the matching in-channel
  in layer l+1 (over the whole coupled group) form one group; the penalty is
  ``lambda * sum over units of ||group||_2``.
* ``slim``: Network Slimming's ``lambda * sum |gamma|`` over the BatchNorm scales of the
  prunable channels (Liu et al. 2017).

:func:`regularized_loss` wraps a ``loss_fn(model, x, y) -> (loss, logits)`` for
:func:`torchslim.train.fit`; the penalty reads the same parameters the optimizer updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import unknown_choice
from .criteria import position_weights
from .graph import build_graph

__all__ = ["REGULARIZERS", "Regularizer", "regularized_loss"]

REGULARIZERS = ("oicsr", "slim")


class Regularizer:
    """``penalty()`` for ``model``; the channel groups are found once, at construction."""

    def __init__(self, model: nn.Module, kind: str, lam: float, example_inputs=None):
        if kind not in REGULARIZERS:
            raise unknown_choice("regulariser", kind, REGULARIZERS)
        self.model, self.kind, self.lam = model, kind, float(lam)
        graph = build_graph(model, example_inputs)
        self.terms = []  # (module name, role, position -> unit tensor, number of units, group offset)
        self.bn = []  # (module name, positions tensor)
        offset = 0
        for group in graph.groups:
            for member, positions in zip(group.members, group.positions):
                unit_of = torch.full((len(member.slots),), -1, dtype=torch.long)
                for unit, where in enumerate(positions):
                    unit_of[where] = unit + offset
                module = model.get_submodule(member.module)
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    self.bn.append((member.module, (unit_of >= 0).nonzero().flatten()))
                elif position_weights(module, member.role) is not None:
                    self.terms.append((member.module, member.role, unit_of))
            offset += len(group)
        self.units = offset

    def penalty(self) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if self.kind == "slim":
            total = torch.zeros((), device=device)
            for name, positions in self.bn:
                weight = self.model.get_submodule(name).weight
                if weight is not None:
                    total = total + weight[positions.to(device)].abs().sum()
            return self.lam * total
        energy = torch.zeros(self.units, device=device)
        for name, role, unit_of in self.terms:
            rows = position_weights(self.model.get_submodule(name), role, detach=False).pow(2).sum(1)
            keep = unit_of >= 0
            energy = energy.index_add(0, unit_of[keep].to(device), rows[keep.to(device)])
        return self.lam * energy.add(1e-12).sqrt().sum()


def regularized_loss(regularizer: Regularizer, base_loss_fn=None):
    """``loss_fn(model, x, y) -> (loss + penalty, logits)`` for :func:`torchslim.train.fit`."""

    def loss_fn(model, x, y):
        if base_loss_fn is None:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        else:
            loss, logits = base_loss_fn(model, x, y)
        return loss + regularizer.penalty(), logits

    return loss_fn
