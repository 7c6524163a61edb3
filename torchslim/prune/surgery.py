"""Per-layer-type pruning rules and the surgery that applies a plan.

A rule says how channels flow through one module type (``trace``) and how to cut the
module (``prune_out`` keeps output channels, ``prune_in`` keeps input channels).  The
built-in rules cover conv (plain, grouped, depthwise with any multiplier), linear,
batch norm, PReLU, flatten, the zoo's channel shuffle and every shape-preserving
activation, pooling and dropout layer.  Register a rule for a custom layer with
:func:`register_rule`; a module type with a rule is a leaf of the trace.

Surgery replaces parameters with smaller copies and updates the constructor attributes
(``out_channels``, ``in_features``, ``num_features``...), so the result is made of plain
``nn`` layers that :func:`torchslim.save` describes without extra work.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Rule", "PassThroughRule", "register_rule", "find_rule", "apply_removal"]

_RULES: dict[type, "Rule"] = {}


def register_rule(module_type: type, rule: "Rule") -> None:
    """Use ``rule`` for ``module_type`` and its subclasses (later registrations win)."""
    _RULES[module_type] = rule


def find_rule(module: nn.Module) -> "Rule | None":
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _cut(module: nn.Module, name: str, keep: torch.Tensor, dim: int) -> None:
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    data = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(data, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, data)


def _channels(meta):
    shape = getattr(meta, "shape", None)
    return None if shape is None or len(shape) < 2 else (len(shape), int(shape[1]))


class Rule:
    """How one module type carries channels, and how to cut it.

    ``trace(graph, name, module, inputs, in_metas, out_meta)`` gets the input slots
    (see :mod:`torchslim.prune.graph`) and returns the output slots; it declares the
    module's channel dimensions with ``graph.add_member(name, "out" | "in", slots)``.
    """

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        raise NotImplementedError

    def prune_out(self, module: nn.Module, keep: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot prune output channels")

    def prune_in(self, module: nn.Module, keep: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot prune input channels")


class PassThroughRule(Rule):
    """Activations, pooling, dropout, identity: channel ``i`` in is channel ``i`` out."""

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        if not isinstance(x, list) or _channels(in_metas[0]) != _channels(out_meta):
            return graph.boundary(inputs, out_meta, f"{type(module).__name__} changes the channels")
        return x

    def prune_out(self, module, keep):
        return None

    prune_in = prune_out


class ConvRule(Rule):
    """Conv1d/2d/3d: plain, grouped (channels pruned at the same index in every group) and
    depthwise (channels pass through, each with its own filters)."""

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        if not isinstance(x, list):
            return graph.boundary(inputs, out_meta, "conv input without channels")
        groups, c_in, c_out = module.groups, module.in_channels, module.out_channels
        if groups > 1 and groups == c_in:
            multiplier = c_out // groups
            out = [x[o // multiplier] for o in range(c_out)]
            graph.add_member(name, "out", out)
            return out
        per_in, per_out = c_in // groups, c_out // groups
        for g in range(1, groups):
            graph.couple(x[:per_in], x[g * per_in:(g + 1) * per_in])
        graph.add_member(name, "in", x)
        out = graph.new_channels(c_out)
        for g in range(1, groups):
            graph.couple(out[:per_out], out[g * per_out:(g + 1) * per_out])
        graph.add_member(name, "out", out)
        return graph.members[(name, "out")].slots

    def prune_out(self, module, keep):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        multiplier = module.out_channels // module.groups
        _cut(module, "weight", keep, 0)
        _cut(module, "bias", keep, 0)
        module.out_channels = len(keep)
        if depthwise:
            module.groups = module.in_channels = len(keep) // multiplier

    def prune_in(self, module, keep):
        per_in = module.in_channels // module.groups
        local = keep[keep < per_in] if module.groups > 1 else keep
        _cut(module, "weight", local, 1)
        module.in_channels = len(local) * module.groups


class LinearRule(Rule):
    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        if not isinstance(x, list) or _channels(in_metas[0])[0] != 2:
            return graph.boundary(inputs, out_meta, "Linear on a tensor that is not (N, features)")
        graph.add_member(name, "in", x)
        out = graph.new_channels(module.out_features)
        graph.add_member(name, "out", out)
        return graph.members[(name, "out")].slots

    def prune_out(self, module, keep):
        _cut(module, "weight", keep, 0)
        _cut(module, "bias", keep, 0)
        module.out_features = len(keep)

    def prune_in(self, module, keep):
        _cut(module, "weight", keep, 1)
        module.in_features = len(keep)


class PerChannelRule(PassThroughRule):
    """Layers with one parameter (or buffer) entry per channel: BatchNorm, PReLU."""

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = super().trace(graph, name, module, inputs, in_metas, out_meta)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return x
        graph.add_member(name, "out", x)
        return x

    def prune_out(self, module, keep):
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _cut(module, attr, keep, 0)
        if isinstance(module, nn.PReLU):
            module.num_parameters = len(keep)
        else:
            module.num_features = len(keep)


class FlattenRule(Rule):
    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        from .ops import flatten_slots

        x = inputs[0] if inputs else None
        in_shape = getattr(in_metas[0], "shape", None)
        if isinstance(x, list) and module.start_dim == 1 and module.end_dim == -1 and in_shape is not None:
            return flatten_slots(x, tuple(in_shape)) if len(in_shape) > 2 else x
        return graph.boundary(inputs, out_meta, "Flatten other than start_dim=1")

    def prune_out(self, module, keep):
        return None

    prune_in = prune_out


class ChannelShuffleRule(Rule):
    """ShuffleNet's shuffle: out[j*g + i] = in[i*k + j].  Position ``j`` of each of the ``g``
    input blocks is pruned together, so the pruned shuffle equals the shuffle pruned."""

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        groups = module.groups
        if not isinstance(x, list) or len(x) % groups:
            return graph.boundary(inputs, out_meta, "channel shuffle of an odd channel count")
        block = len(x) // groups
        for g in range(1, groups):
            graph.couple(x[:block], x[g * block:(g + 1) * block])
        return [x[i * block + j] for j in range(block) for i in range(groups)]

    def prune_out(self, module, keep):
        return None

    prune_in = prune_out


def _register_builtin() -> None:
    from ..models.shufflenet import ChannelShuffle

    passthrough = PassThroughRule()
    for cls in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                nn.ZeroPad2d, nn.Upsample):
        register_rule(cls, passthrough)
    register_rule(nn.modules.conv._ConvNd, ConvRule())
    register_rule(nn.modules.conv._ConvTransposeNd, None)  # different weight layout: a boundary
    register_rule(nn.Linear, LinearRule())
    per_channel = PerChannelRule()
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.PReLU):
        register_rule(cls, per_channel)
    register_rule(nn.Flatten, FlattenRule())
    register_rule(ChannelShuffle, ChannelShuffleRule())


_register_builtin()


def apply_removal(model: nn.Module, graph, removed: set[int]) -> dict[str, int]:
    """Cut every member of ``graph`` so the channel units in ``removed`` disappear.

    ``model`` must be the module the graph was traced on.  Returns the number of
    positions removed per ``module.role``.
    """
    cut = {}
    for (name, role), member in graph.members.items():
        keep = [i for i, var in enumerate(member.slots) if graph.root(var) not in removed]
        if len(keep) == len(member.slots):
            continue
        if not keep:
            raise RuntimeError(f"the plan removes every channel of {name} ({role})")
        module = model.get_submodule(name)
        rule = find_rule(module)
        index = torch.tensor(keep, dtype=torch.long)
        (rule.prune_out if role == "out" else rule.prune_in)(module, index)
        cut[f"{name}.{role}"] = len(member.slots) - len(keep)
    return cut
