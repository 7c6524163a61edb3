"""The float layers of a compiled binary network with their BatchNorm folded in (``compile(exact=False)``).

A binary network keeps its first conv in float, and where that conv's output feeds a real
shortcut as well as the first binary conv (Bi-Real-Net), its BatchNorm cannot go into the
binary conv's input packing: torch then runs it as a call of its own, 15 us on the small maps
binary networks ship for (a sixth of a width-0.5 bireal_vgg14 with the conv).  Folded into the
conv's weights and bias it costs nothing, but the folded conv rounds differently: outputs agree
with the frozen model to float rounding, where a value within rounding of a sign threshold can
flip downstream, so ``compile`` folds only when exactness is waived.
"""

from __future__ import annotations

import copy

from torch import fx, nn

from ..nn import BN_FOLDS, set_submodule


def _eval_batchnorm(module: nn.Module, channels: int) -> bool:
    return (type(module) is nn.BatchNorm2d and not module.training and module.track_running_stats
            and module.running_mean is not None and module.num_features == channels)


def fold_float_batchnorm(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Fold each eval BatchNorm that alone reads a float ``nn.Conv2d`` (and is called once) into that
    conv, in place; returns the convs' names.  BatchNorms already folded into a packing are gone."""
    modules, folded = dict(model.named_modules()), []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.Conv2d:
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        bn_node, conv = users[0], modules[node.target]
        calls = sum(n.op == "call_module" and n.target == bn_node.target for n in graph.nodes)
        if calls != 1 or not _eval_batchnorm(modules.get(bn_node.target), conv.out_channels):
            continue
        set_submodule(model, node.target, BN_FOLDS.find(conv)(copy.deepcopy(conv), modules[bn_node.target]))
        set_submodule(model, bn_node.target, nn.Identity())
        folded.append(node.target)
    return folded
