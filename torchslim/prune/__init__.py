"""Structured channel pruning that really removes channels.

    from torchslim.prune import prune, PruneConfig
    result = prune(model, PruneConfig(criterion="taylor", target_macs=0.5, scope="global", round_to=8), train_set)
    smaller = result.model          # plain nn layers with fewer channels; the input model is untouched

Pieces: :mod:`~torchslim.prune.graph` (fx channel groups, the engine),
:mod:`~torchslim.prune.rules` (the rule registries; built-in rules in :mod:`.layers`,
:mod:`.ops`, :mod:`.shapes` and :mod:`.attention` register on import),
:mod:`~torchslim.prune.surgery` (cuts the layers), :mod:`~torchslim.prune.criteria` (importance registry),
:mod:`~torchslim.prune.select` (layer / global / greedy), :mod:`~torchslim.prune.schedule`
(iterative rounds with checkpoints), :mod:`~torchslim.prune.regularize` (OICSR group lasso,
slimming L1), :mod:`~torchslim.prune.quality` (Spearman against the oracle),
:mod:`~torchslim.prune.recalibrate` (BatchNorm statistics re-estimated after pruning) and
:mod:`~torchslim.prune.deploy` (BN folding).
"""

from ..train.batchnorm import recalibrate_batchnorm
from . import attention, layers, ops, shapes  # noqa: F401  (built-in rules register on import)
from .api import PruneConfig, PruneResult, prune, remove_channels
from .criteria import CRITERIA, Context, get_criterion, list_criteria, register_criterion
from .graph import ChannelGraph, ChannelGroup, build_graph, channel_groups
from .layers import PassThroughRule
from .select import SCOPES
from .sensitivity import sensitivity_sweep
from .rules import Rule, find_rule, register_function_rule, register_rule, register_width_attribute

__all__ = [
    "CRITERIA", "ChannelGraph", "ChannelGroup", "Context", "PassThroughRule", "PruneConfig", "PruneResult",
    "Rule", "SCOPES", "build_graph", "channel_groups", "find_rule", "get_criterion",
    "list_criteria", "prune", "recalibrate_batchnorm", "register_criterion", "register_function_rule",
    "register_rule", "register_width_attribute", "remove_channels", "sensitivity_sweep",
]
