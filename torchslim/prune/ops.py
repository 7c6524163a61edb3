"""How channels flow through functions and tensor methods (``call_function`` / ``call_method``).

Each rule is ``rule(graph, node, meta) -> slots``: it reads the slots of the node's
arguments from ``graph.slots`` and returns the slots of the result (a list, a tuple of
lists for ops returning several tensors, or None for non-tensors).  Operations without a
rule become boundaries (their channels are pinned).  Register more with
:func:`register_function_rule` (a callable target, or a method name such as ``"flatten"``).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx

__all__ = ["register_function_rule", "trace_call", "flatten_slots"]

_FUNCTIONS: dict = {}
_METHODS: dict = {}


def register_function_rule(target, rule) -> None:
    """Register ``rule(graph, node, meta) -> slots`` for a function or a method name."""
    (_METHODS if isinstance(target, str) else _FUNCTIONS)[target] = rule


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
    from .graph import _node_slots

    return [_node_slots(graph, a) for a in (*node.args, *node.kwargs.values())]


def _first(graph, node):
    arg = node.args[0] if node.args else None
    return graph.slots.get(arg.name) if isinstance(arg, fx.Node) else None, _shape(_meta(arg))


def trace_call(graph, node: fx.Node, meta):
    table = _METHODS if node.op == "call_method" else _FUNCTIONS
    rule = table.get(node.target)
    if rule is not None:
        return rule(graph, node, meta)
    if meta is None:  # not a tensor (sizes, shapes, Python values): nothing to follow
        return None
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return graph.boundary(_all_inputs(graph, node), meta, f"no rule for {name}")


def _passthrough(graph, node, meta):
    """Element-wise or spatial ops: channel ``i`` in is channel ``i`` out."""
    slots, in_shape = _first(graph, node)
    out_shape = _shape(meta)
    if slots is None or out_shape is None or in_shape is None:
        return graph.boundary(_all_inputs(graph, node), meta, "input has no channel dimension") \
            if meta is not None else None
    if len(in_shape) != len(out_shape) or in_shape[1] != out_shape[1]:
        return graph.boundary(_all_inputs(graph, node), meta, "changes the channel dimension")
    return slots


def _reduce(graph, node, meta):
    """mean/sum/amax/amin over dims that do not include the channel dim."""
    slots, in_shape = _first(graph, node)
    dims = _arg(node, 1, "dim")
    out_shape = _shape(meta)
    if slots is None or in_shape is None or dims is None or out_shape is None or len(out_shape) < 2:
        return graph.boundary(_all_inputs(graph, node), meta, "reduces the channel dimension")
    dims = [dims] if isinstance(dims, int) else list(dims)
    if any(d % len(in_shape) in (0, 1) for d in dims) or out_shape[1] != in_shape[1]:
        return graph.boundary(_all_inputs(graph, node), meta, "reduces the batch or channel dimension")
    return slots


def flatten_slots(slots: list[int], in_shape) -> list[int]:
    """(N, C, H, W) -> (N, C*H*W): every channel becomes H*W consecutive features."""
    spatial = math.prod(in_shape[2:])
    return [var for var in slots for _ in range(spatial)]


def _reshape(graph, node, meta):
    """flatten(x, 1), x.view(N, -1), x.reshape(N, -1): channels become feature blocks."""
    slots, in_shape = _first(graph, node)
    out_shape = _shape(meta)
    if slots is not None and in_shape and out_shape and in_shape == out_shape:
        return slots
    if (slots is not None and in_shape and out_shape and len(in_shape) >= 3 and len(out_shape) == 2
            and out_shape[0] == in_shape[0]):
        return flatten_slots(slots, in_shape)
    return graph.boundary(_all_inputs(graph, node), meta, "reshape other than flattening (N, C, ...) to (N, -1)")


def _elementwise(graph, node, meta):
    """Binary ops: operands with the full channel dim are coupled position by position."""
    out_shape = _shape(meta)
    if out_shape is None or len(out_shape) < 2:
        return None if meta is None else graph.boundary(_all_inputs(graph, node), meta, "no channel dim")
    full = []
    for arg in (*node.args, *node.kwargs.values()):
        shape = _shape(_meta(arg))
        if shape is None:
            continue  # a Python number
        aligned = 1 - (len(out_shape) - len(shape))
        if aligned < 0 or shape[aligned] == 1:
            continue  # broadcast along the channels
        slots = graph.slots.get(arg.name)
        if len(shape) != len(out_shape) or not isinstance(slots, list):
            return graph.boundary(_all_inputs(graph, node), meta, "operand with per-channel constants")
        full.append(slots)
    if not full:
        return graph.new_channels(out_shape[1], pinned=True)
    for other in full[1:]:
        graph.couple(full[0], other)
    return full[0]


def _cat(graph, node, meta):
    tensors = _arg(node, 0, "tensors")
    dim = _arg(node, 1, "dim", 0)
    out_shape = _shape(meta)
    slots = [graph.slots.get(t.name) if isinstance(t, fx.Node) else None for t in tensors]
    if out_shape is None or any(not isinstance(s, list) for s in slots):
        return graph.boundary(_all_inputs(graph, node), meta, "concatenates tensors without channels")
    if dim % len(out_shape) == 1:
        return [var for s in slots for var in s]
    for other in slots[1:]:
        graph.couple(slots[0], other)
    return slots[0]


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


def _getitem(graph, node, meta):
    container = node.args[0]
    index = node.args[1]
    slots = graph.slots.get(container.name) if isinstance(container, fx.Node) else None
    if isinstance(slots, tuple) and isinstance(index, int):
        return slots[index]
    if meta is None:
        return None
    return graph.boundary(_all_inputs(graph, node), meta, "indexing a tensor")


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


def _nothing(graph, node, meta):
    return None


def _getattr(graph, node, meta):
    """``x.shape`` and friends carry no channels; a tensor field (``sort(x).values``) is a boundary."""
    if _shape(meta) is None:
        return None
    return graph.boundary(_all_inputs(graph, node), meta, f"attribute {node.args[1]!r}")


_PASSTHROUGH_FUNCTIONS = (
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.mish,
    F.softplus, F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.max_pool1d, F.avg_pool1d, F.interpolate, F.hardtanh, F.sigmoid, F.tanh,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.abs, torch.neg, operator.neg,
)
_PASSTHROUGH_METHODS = ("relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "abs", "neg", "contiguous",
                        "clone", "float", "double", "half", "to", "type", "detach", "cpu", "cuda")
_ELEMENTWISE = (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum)
_ELEMENTWISE_METHODS = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")

for _fn in _PASSTHROUGH_FUNCTIONS:
    register_function_rule(_fn, _passthrough)
for _name in _PASSTHROUGH_METHODS:
    register_function_rule(_name, _passthrough)
for _fn in _ELEMENTWISE:
    register_function_rule(_fn, _elementwise)
for _name in _ELEMENTWISE_METHODS:
    register_function_rule(_name, _elementwise)
for _target in (torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"):
    register_function_rule(_target, _reduce)
for _target in (torch.flatten, "flatten", "view", "reshape", torch.reshape):
    register_function_rule(_target, _reshape)
for _target in (torch.cat, torch.concat):
    register_function_rule(_target, _cat)
for _target in (torch.chunk, "chunk"):
    register_function_rule(_target, _chunk)
register_function_rule(operator.getitem, _getitem)
register_function_rule(F.pad, _pad)
register_function_rule(getattr, _getattr)
for _target in ("size", "dim"):
    register_function_rule(_target, _nothing)
