"""Built-in module rules: conv (plain, grouped, depthwise with any multiplier), linear on
any token layout, batch norm, PReLU, layer norm, flatten, the zoo's channel shuffle and
every shape-preserving activation, pooling and dropout layer.

Surgery replaces parameters with smaller copies and updates the constructor attributes
(``out_channels``, ``in_features``, ``num_features``, ``normalized_shape``...), so the
result is made of plain ``nn`` layers that :func:`torchslim.save` describes without extra work.
"""

from __future__ import annotations

from torch import nn

from ..models.shufflenet import ChannelShuffle
from .ops import flatten_slots
from .rules import Rule, at_dim, channel_dim, cut, register_rule

__all__ = ["PassThroughRule", "ConvRule", "LinearRule", "PerChannelRule", "LayerNormRule"]


def _shape(meta):
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


class PassThroughRule(Rule):
    """Activations, dropout, identity: channel ``i`` in is channel ``i`` out, in any layout."""

    any_dim = True

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        dim = channel_dim(x)
        before, after = _shape(in_metas[0]) if in_metas else None, _shape(out_meta)
        if (not isinstance(x, list) or before is None or after is None or len(before) != len(after)
                or len(before) <= dim or before[dim] != after[dim]):
            return graph.boundary(inputs, out_meta, f"{type(module).__name__} changes the channels")
        return x

    def prune_out(self, module, keep):
        return None

    prune_in = prune_out


class SpatialRule(PassThroughRule):
    """Pooling, padding, upsampling: they read dimension 1 as the channels."""

    any_dim = False


class ConvRule(Rule):
    """Conv1d/2d/3d: plain, grouped (channels pruned at the same index in every group) and
    depthwise (channels pass through, each with its own filters).

    A depthwise conv has an "out" member only; a grouped one has "in" and "out".  Surgery
    cuts every "out" before any "in" (see :func:`~torchslim.prune.surgery.apply_removal`),
    so a grouped conv that keeps one input channel per group is never taken for depthwise."""

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
        cut(module, "weight", keep, 0)
        cut(module, "bias", keep, 0)
        module.out_channels = len(keep)
        if depthwise:
            module.groups = module.in_channels = len(keep) // multiplier

    def prune_in(self, module, keep):
        per_in = module.weight.shape[1]
        local = keep[keep < per_in] if module.groups > 1 else keep
        cut(module, "weight", local, 1)
        module.in_channels = len(local) * module.groups


class LinearRule(Rule):
    """Linear on (N, features) or on tokens (N, ..., features): it reads the last dimension.
    Where the input's channels sit elsewhere, its features are new, pinned variables."""

    any_dim = True

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = inputs[0] if inputs else None
        in_shape, out_shape = _shape(in_metas[0]) if in_metas else None, _shape(out_meta)
        if in_shape is None or out_shape is None or len(in_shape) < 2:
            return graph.boundary(inputs, out_meta, "Linear on a tensor without a batch dimension")
        if not isinstance(x, list) or channel_dim(x) != len(in_shape) - 1:
            graph.pin(x)
            x = graph.new_channels(module.in_features, pinned=True)
        graph.add_member(name, "in", x)
        graph.add_member(name, "out", graph.new_channels(module.out_features))
        return at_dim(graph.members[(name, "out")].slots, len(out_shape) - 1)

    def prune_out(self, module, keep):
        cut(module, "weight", keep, 0)
        cut(module, "bias", keep, 0)
        module.out_features = len(keep)

    def prune_in(self, module, keep):
        cut(module, "weight", keep, 1)
        module.in_features = len(keep)


class PerChannelRule(PassThroughRule):
    """Layers with one parameter (or buffer) entry per channel of dimension 1: BatchNorm, PReLU."""

    any_dim = False

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = super().trace(graph, name, module, inputs, in_metas, out_meta)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return x
        graph.add_member(name, "out", x)
        return x

    def prune_out(self, module, keep):
        for attr in ("weight", "bias", "running_mean", "running_var"):
            cut(module, attr, keep, 0)
        if isinstance(module, nn.PReLU):
            module.num_parameters = len(keep)
        else:
            module.num_features = len(keep)


class LayerNormRule(PassThroughRule):
    """LayerNorm over the channels (the last dimension, as in tokens and channels-last maps).
    A subclass with its own forward (``LayerNorm2d``: permute, ``F.layer_norm``, permute) is
    traced through; its parameters are cut by :meth:`prune_param`."""

    def is_leaf(self, module):
        return type(module).forward is nn.LayerNorm.forward

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        x = super().trace(graph, name, module, inputs, in_metas, out_meta)
        shape = _shape(out_meta)
        if channel_dim(x) < len(shape) - len(module.normalized_shape):
            return x  # normalised over dimensions after the channels: each channel on its own
        if len(module.normalized_shape) != 1:
            return graph.boundary(inputs, out_meta, "LayerNorm over the channels and other dimensions")
        graph.add_member(name, "out", x)
        return x

    def prune_out(self, module, keep):
        cut(module, "weight", keep, 0)
        cut(module, "bias", keep, 0)
        module.normalized_shape = (len(keep),)

    def prune_param(self, module, attr, dim, keep):
        cut(module, attr, keep, dim)
        module.normalized_shape = (len(keep),)


class FlattenRule(Rule):
    def trace(self, graph, name, module, inputs, in_metas, out_meta):
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


def _register() -> None:
    passthrough, spatial = PassThroughRule(), SpatialRule()
    for cls in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
        register_rule(cls, passthrough)
    for cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                nn.ZeroPad2d, nn.Upsample):
        register_rule(cls, spatial)
    register_rule(nn.modules.conv._ConvNd, ConvRule())
    register_rule(nn.modules.conv._ConvTransposeNd, None)  # different weight layout: a boundary
    register_rule(nn.Linear, LinearRule())
    per_channel = PerChannelRule()
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.PReLU):
        register_rule(cls, per_channel)
    register_rule(nn.LayerNorm, LayerNormRule())
    register_rule(nn.Flatten, FlattenRule())
    register_rule(ChannelShuffle, ChannelShuffleRule())


_register()
