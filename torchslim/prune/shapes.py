"""Rules for ops that move the channel dimension: reshape / view / flatten / squeeze,
permute / transpose (channels-last blocks, tokens), expand (a class token) and indexing.

Each follows the channel dimension from the shapes ShapeProp recorded, so sizes read at
run time (``x.reshape(n, -1, c)``) keep working after pruning.  A reshape that splits the
channels into groups (``(N, L, 3C) -> (N, L, 3, heads, C/heads)``, a channel shuffle's
``(N, C, H, W) -> (N, g, C/g, H, W)``) carries them in the innermost size, with position
``j`` of every group one channel unit, as a grouped conv's groups.  The outer sizes are
constants that stay; the innermost one must follow the pruning: ``-1``, a size read at run
time from the channel count, or a registered width attribute (``self.head_dim``).  Any
other split is a boundary.
"""

from __future__ import annotations

import math
import operator
from collections import Counter

import torch
from torch import fx

from .rules import at_dim, channel_dim, couple_heads, node_slots, register_function_rule, width_attributes

__all__ = ["reshaped_slots", "split_span"]


def _shape(node):
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else node
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _inputs(graph, node):
    return [node_slots(graph, a) for a in (*node.args, *node.kwargs.values())]


def _is_edge_product(dims, value, from_end: bool) -> bool:
    product = 1
    if product == value:
        return True
    for size in (reversed(dims) if from_end else dims):
        product *= size
        if product == value:
            return True
    return False


def reshaped_slots(slots, in_shape, out_shape):
    """Slots after a reshape that keeps every channel whole, or None when it splits them.

    The channel dimension may merge with neighbours (flatten: each channel becomes a block
    of features; channels-last flatten: channels interleave) or move by itself."""
    dim = channel_dim(slots)
    size = in_shape[dim]
    prefix = math.prod(in_shape[:dim])
    before = 1
    for out_dim, out_size in enumerate(out_shape):
        if before > prefix:
            break
        if prefix % before == 0:
            outer = prefix // before
            if (out_size % (outer * size) == 0 and _is_edge_product(in_shape[:dim], outer, True)
                    and _is_edge_product(in_shape[dim + 1:], out_size // (outer * size), False)):
                inner = out_size // (outer * size)
                return at_dim([slots[(p // inner) % size] for p in range(out_size)], out_dim)
        before *= out_size
    return None


def _reshape_param(graph, node, source, in_shape, out_shape) -> bool:
    """``gamma.reshape(1, -1, 1, 1)``: a parameter with size-1 dims added or removed stays a
    parameter, its dims followed; False for any other reshape of it."""
    kept_in = [d for d, size in enumerate(in_shape) if size != 1]
    kept_out = [d for d, size in enumerate(out_shape) if size != 1]
    if [in_shape[d] for d in kept_in] != [out_shape[d] for d in kept_out]:
        return False
    before = graph.param_dims.get(source.name, tuple(range(len(in_shape))))
    mapping = [None] * len(out_shape)
    for d_in, d_out in zip(kept_in, kept_out):
        mapping[d_out] = before[d_in]
    graph.params[node.name] = graph.params[source.name]
    graph.param_dims[node.name] = tuple(mapping)
    return True


def split_span(slots, in_shape, out_shape):
    """``(first, last)``: the output dims a reshape splits the channel dimension into, the
    dims before and after it kept whole (``(N, L, 3C) -> (N, L, 3, H, C/3H)``: (2, 4)); None
    for any other reshape."""
    dim = channel_dim(slots)
    prefix, size = math.prod(in_shape[:dim]), in_shape[dim]
    starts = [a for a in range(len(out_shape)) if math.prod(out_shape[:a]) == prefix]
    if not starts or size <= 1:
        return None
    first, product = starts[-1], 1  # leading size-1 dims belong to the prefix
    for last in range(first, len(out_shape)):
        product *= out_shape[last]
        if product >= size:
            break
    if product != size or last == first or math.prod(out_shape[last + 1:]) != math.prod(in_shape[dim + 1:]):
        return None
    return first, last


def _reshape(graph, node, meta):
    source = node.args[0] if node.args else None
    slots = graph.slots.get(source.name) if isinstance(source, fx.Node) else None
    in_shape, out_shape = _shape(source), _shape(meta)
    if in_shape is None or out_shape is None:
        return None if meta is None else graph.boundary(_inputs(graph, node), meta, "reshape of a non-tensor")
    if isinstance(source, fx.Node) and source.name in graph.params and \
            _reshape_param(graph, node, source, in_shape, out_shape):
        return None
    if not isinstance(slots, list):
        return graph.boundary(_inputs(graph, node), meta, "reshape of a tensor without channels")
    if in_shape == out_shape:
        return slots
    result = reshaped_slots(slots, in_shape, out_shape)
    span = None if result is not None else split_span(slots, in_shape, out_shape)
    if result is None and span is None:
        reason = "reshape that splits the channels"
    elif span is not None:
        result, reason = _split(graph, node, slots, out_shape, span)
    else:
        reason = _check_sizes(graph, node, result)
    if reason is None:
        return result
    _pin_size_reads(graph, node)
    return graph.boundary(_inputs(graph, node), meta, reason)


def _pin_size_reads(graph, node) -> None:
    """A reshape left as a boundary keeps its output's sizes: the channel counts they are
    read from at run time (``x.shape[-1]``, ``x.size(1) // g``, any arithmetic on them)
    must not change either."""
    stack, seen = [s for s in _size_args(node) if isinstance(s, fx.Node)], set()
    while stack:
        size = stack.pop()
        if size in seen:
            continue
        seen.add(size)
        source = _shape_source(size)
        if source is None:
            if _shape(size) is None:  # arithmetic on sizes, not a tensor
                stack.extend(size.all_input_nodes)
            continue
        tensor, dim, _ = source
        slots, shape = graph.slots.get(tensor.name), _shape(tensor)
        if isinstance(slots, list) and shape is not None and channel_dim(slots) == dim % len(shape):
            graph.pin(slots)


def _check_sizes(graph, node, result, split: bool = False):
    """Why the sizes a reshape asks for would not follow the pruning, or None when they do."""
    what = "reshape that splits the channels into" if split else "reshape to"
    sizes = _size_args(node)
    for position, size in enumerate(sizes):
        if isinstance(size, fx.Node) and not _sized_by(graph, result, position, size):
            return f"{what} a channel count read from another tensor"
    size = sizes[channel_dim(result)] if channel_dim(result) < len(sizes) else None
    if isinstance(size, int) and size != -1:
        owners = _width_owners(graph, node, size)
        if not owners:
            return f"{what} a constant channel count ({size})"
        for owner in owners:
            graph.add_member(owner[0], "=" + owner[1], result)
    return None


def _split(graph, node, slots, out_shape, span):
    """``(..., G*H*D) -> (..., G, H, D)``: position ``j`` of every group is one unit and the
    result carries the first group's slots in the innermost dim; (result, reason or None)."""
    first, last = span
    sizes = _size_args(node)
    result = at_dim(slots[:out_shape[last]], last)
    if len(sizes) != len(out_shape):
        return result, "reshape that splits the channels"
    if any(not isinstance(size, int) for size in sizes[first:last]):
        return result, "reshape that splits the channels into group counts read at run time"
    couple_heads(graph, slots, len(slots) // len(result))
    return result, _check_sizes(graph, node, result, split=True)


def _same_count(graph, source, result, factor: int) -> bool:
    """Whether ``source`` keeps ``factor`` times the positions ``result`` keeps, whatever is
    pruned: each channel unit occupies ``factor`` times as many of its positions."""
    wanted = Counter(graph.root(var) for var in result)
    return Counter(graph.root(var) for var in source) == Counter({k: v * factor for k, v in wanted.items()})


def _sized_by(graph, result, position: int, size: fx.Node) -> bool:
    """A size read at run time (``b, g, p, d = x.shape``; ``c // groups``).  Where it is
    another tensor's channel count, that tensor's channels and the result's stay equal: they
    are coupled when they land in the result's channel dimension (unless their units keep
    the counts equal already: the tensor a split divides, or the one a shuffle reorders);
    elsewhere they are pinned and the reshape is a boundary (False).  A size computed
    otherwise may not give the channels."""
    source = _shape_source(size)
    if source is None:
        return position != channel_dim(result)
    tensor, dim, divisor = source
    slots = graph.slots.get(tensor.name) if isinstance(tensor, fx.Node) else None
    shape = _shape(tensor)
    if not isinstance(slots, list) or shape is None or channel_dim(slots) != dim % len(shape):
        return position != channel_dim(result)  # a size that is not a channel count
    if position == channel_dim(result):
        if _same_count(graph, slots, result, divisor):
            return True
        if divisor == 1 and len(slots) == len(result):
            graph.couple(slots, result)
            return True
    elif all(graph.vars.is_pinned(var) for var in slots):
        return True  # a count that never changes (the model input's)
    graph.pin(slots)
    return False


def _shape_source(size: fx.Node):
    """(tensor node, dim, divisor) for ``x.size(dim)``, ``x.size()[dim]`` or ``x.shape[dim]``,
    divided by an integer or not (``x.size(1) // groups``); else None."""
    divisor = 1
    if size.op == "call_function" and size.target is operator.floordiv and isinstance(size.args[0], fx.Node) \
            and isinstance(size.args[1], int) and size.args[1] > 0:
        size, divisor = size.args[0], size.args[1]
    if size.op == "call_method" and size.target == "size" and len(size.args) == 2:
        return (size.args[0], size.args[1], divisor) if isinstance(size.args[1], int) else None
    if size.op != "call_function" or size.target is not operator.getitem or not isinstance(size.args[1], int):
        return None
    whole = size.args[0]
    if not isinstance(whole, fx.Node):
        return None
    if whole.op == "call_method" and whole.target == "size" and len(whole.args) == 1:
        return whole.args[0], size.args[1], divisor
    if whole.op == "call_function" and whole.target is getattr and whole.args[1] == "shape":
        return whole.args[0], size.args[1], divisor
    return None


def _size_args(node) -> list:
    """The sizes a view/reshape asks for (ints, or nodes read at run time); [] for flatten."""
    if node.target in ("view", "reshape"):
        sizes = list(node.args[1:])
    elif node.target is torch.reshape:
        sizes = [node.args[1] if len(node.args) > 1 else node.kwargs.get("shape")]
    else:
        return []
    return list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes


def _width_owners(graph, node, literal) -> list[tuple[str, str]]:
    """(module path, attribute) of the registered width attributes the constant may have
    come from: those of the innermost module with one equal to it.  Where several are equal
    (a single head: ``head_dim == attn_dim``), each follows the count kept."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    paths = [""] + [path for path, _ in stack]
    for path in reversed(paths):
        module = graph.model.get_submodule(path)
        found = [(path, attr) for attr in width_attributes(module) if getattr(module, attr, None) == literal]
        if found:
            return found
    return []


def _dims_arg(node):
    """The permutation of ``x.permute(0, 2, 1)``, ``x.permute([0, 2, 1])`` or ``torch.permute(x, dims)``."""
    rest = list(node.args[1:]) or [node.kwargs.get("dims")]
    return list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest


def _permute(graph, node, meta):
    slots = graph.slots.get(node.args[0].name) if isinstance(node.args[0], fx.Node) else None
    out_shape = _shape(meta)
    dims = _dims_arg(node)
    if not isinstance(slots, list) or out_shape is None or any(not isinstance(d, int) for d in dims):
        return graph.boundary(_inputs(graph, node), meta, "permute of a tensor without channels")
    dims = [d % len(out_shape) for d in dims]
    return at_dim(slots, dims.index(channel_dim(slots)))


def _transpose(graph, node, meta):
    slots = graph.slots.get(node.args[0].name) if isinstance(node.args[0], fx.Node) else None
    out_shape = _shape(meta)
    pair = [node.args[i] if len(node.args) > i else node.kwargs.get(k) for i, k in ((1, "dim0"), (2, "dim1"))]
    if not isinstance(slots, list) or out_shape is None or any(not isinstance(d, int) for d in pair):
        return graph.boundary(_inputs(graph, node), meta, "transpose of a tensor without channels")
    a, b = (d % len(out_shape) for d in pair)
    dim = channel_dim(slots)
    return at_dim(slots, b if dim == a else a if dim == b else dim)


def _expand(graph, node, meta):
    """``cls_token.expand(n, -1, -1)``: a parameter stays a parameter (cut where it meets channels)."""
    source = node.args[0]
    if isinstance(source, fx.Node) and source.name in graph.params and _shape(source) is not None \
            and len(_shape(source)) == len(_shape(meta) or ()):
        graph.params[node.name] = graph.params[source.name]
        if source.name in graph.param_dims:
            graph.param_dims[node.name] = graph.param_dims[source.name]
        return None
    slots = graph.slots.get(source.name) if isinstance(source, fx.Node) else None
    out_shape = _shape(meta)
    if not isinstance(slots, list) or out_shape is None:
        return graph.boundary(_inputs(graph, node), meta, "expand of a tensor without channels")
    dim = channel_dim(slots) + len(out_shape) - len(_shape(source))
    if out_shape[dim] != len(slots):
        return graph.boundary(_inputs(graph, node), meta, "expand of the channels")
    return at_dim(slots, dim)


def _index_dim(index, in_shape, out_shape, dim):
    """Where the channel dimension lands after ``x[index]``, or None if the index touches it."""
    items = index if isinstance(index, tuple) else (index,)
    allowed = (int, slice, type(None), type(Ellipsis))
    if not all(isinstance(i, allowed) and not isinstance(i, bool) for i in items):
        return None
    explicit = sum(1 for i in items if i is not None and i is not Ellipsis)
    expanded = []
    for item in items:
        expanded += [slice(None)] * (len(in_shape) - explicit) if item is Ellipsis else [item]
    in_pos = out_pos = 0
    for item in expanded:
        if item is None:
            out_pos += 1
            continue
        if in_pos == dim:
            whole = isinstance(item, slice) and item.start in (None, 0) and item.step in (None, 1)
            return out_pos if whole and out_shape[out_pos] == in_shape[dim] else None
        in_pos += 1
        out_pos += 0 if isinstance(item, int) else 1
    return out_pos + dim - in_pos


def _unbind(graph, node, meta):
    """``qkv.unbind(0)``: every piece carries the input's channels (the dim taken out is another)."""
    source = node.args[0]
    slots = graph.slots.get(source.name) if isinstance(source, fx.Node) else None
    in_shape = _shape(source)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(slots, list) or in_shape is None or not isinstance(meta, (tuple, list)) \
            or hasattr(meta, "shape") or not isinstance(dim, int):
        return graph.boundary(_inputs(graph, node), meta, "unbind of a tensor without channels")
    dim, channels = dim % len(in_shape), channel_dim(slots)
    after = channels - (dim < channels)
    if dim == channels or after == 0:
        return graph.boundary(_inputs(graph, node), meta, "unbind of the channels")
    return tuple(at_dim(slots, after) for _ in meta)


def _getitem(graph, node, meta):
    container, index = node.args[0], node.args[1]
    slots = graph.slots.get(container.name) if isinstance(container, fx.Node) else None
    if isinstance(slots, tuple) and isinstance(index, int):
        return slots[index]
    if meta is None:
        return None
    in_shape, out_shape = _shape(container), _shape(meta)
    if isinstance(slots, list) and in_shape is not None and out_shape is not None:
        dim = _index_dim(index, in_shape, out_shape, channel_dim(slots))
        if dim is not None:
            return at_dim(slots, dim)
    return graph.boundary(_inputs(graph, node), meta, "indexing the channels")


for _target in ("view", "reshape", "flatten", "squeeze", "unsqueeze", torch.flatten, torch.reshape,
                torch.squeeze, torch.unsqueeze):
    register_function_rule(_target, _reshape, any_dim=True)
for _target in ("permute", torch.permute):
    register_function_rule(_target, _permute, any_dim=True)
for _target in ("transpose", "swapaxes", torch.transpose, torch.swapaxes):
    register_function_rule(_target, _transpose, any_dim=True)
register_function_rule("expand", _expand, any_dim=True)
for _target in ("unbind", torch.unbind):
    register_function_rule(_target, _unbind, any_dim=True)
register_function_rule(operator.getitem, _getitem, any_dim=True)
