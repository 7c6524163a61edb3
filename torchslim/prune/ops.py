"""How channels flow through functions and tensor methods (``call_function`` / ``call_method``).

Each rule is ``rule(graph, node, meta) -> slots``: it reads the slots of the node's
arguments from ``graph.slots`` and returns the slots of the result (a list, a tuple of
lists for ops returning several tensors, or None for non-tensors).  Operations without a
rule become boundaries (their channels are pinned).  Register more with
:func:`~torchslim.prune.rules.register_function_rule`.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx

from .rules import at_dim, channel_dim, node_slots, register_function_rule

__all__ = ["flatten_slots"]


def _meta(arg):
    return arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None


def _shape(meta):
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _all_inputs(graph, node):
    return [node_slots(graph, a) for a in (*node.args, *node.kwargs.values())]


def _first(graph, node):
    arg = node.args[0] if node.args else None
    return graph.slots.get(arg.name) if isinstance(arg, fx.Node) else None, _shape(_meta(arg))


def _passthrough(graph, node, meta):
    """Element-wise ops: channel ``i`` in is channel ``i`` out, in any layout."""
    slots, in_shape = _first(graph, node)
    out_shape = _shape(meta)
    if slots is None or out_shape is None or in_shape is None:
        return graph.boundary(_all_inputs(graph, node), meta, "input has no channel dimension") \
            if meta is not None else None
    dim = channel_dim(slots)
    if len(in_shape) != len(out_shape) or dim >= len(in_shape) or in_shape[dim] != out_shape[dim]:
        return graph.boundary(_all_inputs(graph, node), meta, "changes the channel dimension")
    return slots


def _reduce(graph, node, meta):
    """mean/sum/amax/amin over dims that do not include the batch or the channels."""
    slots, in_shape = _first(graph, node)
    dims = _arg(node, 1, "dim")
    keepdim = _arg(node, 2, "keepdim", False)
    out_shape = _shape(meta)
    if slots is None or in_shape is None or dims is None or out_shape is None or len(out_shape) < 2:
        return graph.boundary(_all_inputs(graph, node), meta, "reduces the channel dimension")
    dim = channel_dim(slots)
    dims = [d % len(in_shape) for d in ([dims] if isinstance(dims, int) else list(dims))]
    if 0 in dims or dim in dims:
        return graph.boundary(_all_inputs(graph, node), meta, "reduces the batch or channel dimension")
    after = dim if keepdim else dim - sum(d < dim for d in dims)
    if after >= len(out_shape) or out_shape[after] != in_shape[dim]:
        return graph.boundary(_all_inputs(graph, node), meta, "reduces the channel dimension")
    return at_dim(slots, after)


def flatten_slots(slots: list[int], in_shape) -> list[int]:
    """(N, C, H, W) -> (N, C*H*W): every channel becomes H*W consecutive features."""
    spatial = math.prod(in_shape[2:])
    return [var for var in slots for _ in range(spatial)]


def _operand_dim(graph, node, out_shape):
    """The channel dimension of the output: the one every operand with channels agrees on."""
    dims = set()
    for arg in (*node.args, *node.kwargs.values()):
        for item in (arg if isinstance(arg, (list, tuple)) else (arg,)):
            slots = graph.slots.get(item.name) if isinstance(item, fx.Node) else None
            shape = _shape(_meta(item))
            if isinstance(slots, list) and shape is not None:
                dims.add(channel_dim(slots) + len(out_shape) - len(shape))
    return dims.pop() if len(dims) == 1 else None


def _elementwise(graph, node, meta):
    """Binary ops: operands with the full channel dim are coupled position by position; a
    parameter operand (layer scale, positional embedding) is cut with them."""
    out_shape = _shape(meta)
    if out_shape is None or len(out_shape) < 2:
        return None if meta is None else graph.boundary(_all_inputs(graph, node), meta, "no channel dim")
    dim = _operand_dim(graph, node, out_shape)
    if dim is None:
        dim = 1
    full, params = [], []
    for arg in (*node.args, *node.kwargs.values()):
        shape = _shape(_meta(arg))
        if shape is None:
            continue  # a Python number
        aligned = dim - (len(out_shape) - len(shape))
        if aligned < 0 or shape[aligned] == 1:
            continue  # broadcast along the channels
        slots = graph.slots.get(arg.name)
        if isinstance(slots, list) and channel_dim(slots) == aligned:
            full.append(slots)
        elif arg.name in graph.params:
            params.append((arg.name, aligned))
        else:
            return graph.boundary(_all_inputs(graph, node), meta, "operand with per-channel constants")
    if not full:
        return at_dim(graph.new_channels(out_shape[dim], pinned=True), dim)
    for other in full[1:]:
        graph.couple(full[0], other)
    for name, aligned in params:
        graph.add_param(name, aligned, full[0])
    return full[0]


def _cat(graph, node, meta):
    """Concatenation along the channels joins the slots; along another dimension it couples
    the operands (a class token or a parameter is cut with them)."""
    tensors = list(_arg(node, 0, "tensors"))
    out_shape = _shape(meta)
    dim = _operand_dim(graph, node, out_shape) if out_shape is not None else None
    if dim is None or any(not isinstance(t, fx.Node) for t in tensors):
        return graph.boundary(_all_inputs(graph, node), meta, "concatenates tensors without channels")
    along = _arg(node, 1, "dim", 0) % len(out_shape)
    slots = [graph.slots.get(t.name) for t in tensors]
    if along == dim:
        if any(not isinstance(s, list) for s in slots):
            return graph.boundary(_all_inputs(graph, node), meta, "concatenates tensors without channels")
        return at_dim([var for s in slots for var in s], dim)
    full = [s for s in slots if isinstance(s, list)]
    for tensor, s in zip(tensors, slots):
        if isinstance(s, list):
            continue
        if tensor.name not in graph.params:
            return graph.boundary(_all_inputs(graph, node), meta, "concatenates tensors without channels")
        graph.add_param(tensor.name, dim, full[0])
    for other in full[1:]:
        graph.couple(full[0], other)
    return full[0]


def _chunk(graph, node, meta):
    """torch.chunk along the channels: sizes are read at run time, so the pieces stay
    equal after pruning when position ``j`` of every piece is pruned together."""
    slots, in_shape = _first(graph, node)
    dim = _arg(node, 2, "dim", 0)
    if not isinstance(meta, (tuple, list)) or hasattr(meta, "shape") or slots is None or in_shape is None:
        return graph.boundary(_all_inputs(graph, node), meta, "chunk of a tensor without channels")
    if dim % len(in_shape) != 1:
        return tuple(slots for _ in meta)
    sizes = [_shape(m)[1] for m in meta]
    if len(set(sizes)) != 1:
        return graph.boundary(_all_inputs(graph, node), meta, "unequal chunks")
    size = sizes[0]
    pieces = [slots[i * size:(i + 1) * size] for i in range(len(sizes))]
    for piece in pieces[1:]:
        graph.couple(pieces[0], piece)
    return tuple(pieces)


def _pad(graph, node, meta):
    """Constant padding.  Zero channels appended or prepended (a shortcut that widens the
    stream) are pinned; the padded input's channels pass through with their offsets."""
    slots, in_shape = _first(graph, node)
    pad = list(_arg(node, 1, "pad", ()))
    mode = _arg(node, 2, "mode", "constant")
    out_shape = _shape(meta)
    if slots is None or in_shape is None or out_shape is None or mode != "constant":
        return graph.boundary(_all_inputs(graph, node), meta, "non-constant padding")
    ndim = len(in_shape)
    if len(pad) > 2 * (ndim - 1) or any(not isinstance(p, int) for p in pad):
        return graph.boundary(_all_inputs(graph, node), meta, "padding of the batch dimension")
    if len(pad) < 2 * (ndim - 1):
        return slots
    before, after = pad[-2], pad[-1]
    if before < 0 or after < 0:
        return graph.boundary(_all_inputs(graph, node), meta, "cropping the channels")
    return graph.new_channels(before, pinned=True) + slots + graph.new_channels(after, pinned=True)


def _softmax(graph, node, meta):
    """softmax / log_softmax over a dimension other than the channels (attention scores)."""
    slots, in_shape = _first(graph, node)
    dim = _arg(node, 1, "dim")
    if not isinstance(slots, list) or in_shape is None or not isinstance(dim, int) \
            or dim % len(in_shape) == channel_dim(slots):
        return graph.boundary(_all_inputs(graph, node), meta, "softmax over the channels")
    return slots


def _nothing(graph, node, meta):
    return None


def _getattr(graph, node, meta):
    """``x.shape`` and friends carry no channels; a tensor field (``sort(x).values``) is a boundary."""
    if _shape(meta) is None:
        return None
    return graph.boundary(_all_inputs(graph, node), meta, f"attribute {node.args[1]!r}")


_PASSTHROUGH_FUNCTIONS = (
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.mish,
    F.softplus, F.dropout, F.hardtanh, F.sigmoid, F.tanh,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.abs, torch.neg, operator.neg,
)
_SPATIAL_FUNCTIONS = (F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                      F.max_pool1d, F.avg_pool1d, F.interpolate)
_PASSTHROUGH_METHODS = ("relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "abs", "neg", "contiguous",
                        "clone", "float", "double", "half", "to", "type", "detach", "cpu", "cuda")
_ELEMENTWISE = (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum)
_ELEMENTWISE_METHODS = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")
# torchvision's stochastic depth is an identity in eval (and scales whole samples in training)
_NAMED_PASSTHROUGH = ("torchvision.ops.stochastic_depth.stochastic_depth",)
# timm's attention adds its optional mask to the scores: ``scores if mask is None else scores + mask``
_NAMED_ELEMENTWISE = ("timm.layers.attention.maybe_add_mask",)

for _target in (*_PASSTHROUGH_FUNCTIONS, *_PASSTHROUGH_METHODS, *_NAMED_PASSTHROUGH):
    register_function_rule(_target, _passthrough, any_dim=True)
for _fn in _SPATIAL_FUNCTIONS:
    register_function_rule(_fn, _passthrough)
for _target in (*_ELEMENTWISE, *_ELEMENTWISE_METHODS, *_NAMED_ELEMENTWISE):
    register_function_rule(_target, _elementwise, any_dim=True)
for _target in (torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"):
    register_function_rule(_target, _reduce, any_dim=True)
for _target in (torch.cat, torch.concat):
    register_function_rule(_target, _cat, any_dim=True)
for _target in (torch.chunk, "chunk"):
    register_function_rule(_target, _chunk)
register_function_rule(F.pad, _pad)
for _target in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax"):
    register_function_rule(_target, _softmax, any_dim=True)
register_function_rule(getattr, _getattr, any_dim=True)
for _target in ("size", "dim"):
    register_function_rule(_target, _nothing, any_dim=True)
