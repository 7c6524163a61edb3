"""The channel dependency graph: which channels of which layers must be pruned together.

This is the engine; the rules it applies come from :mod:`~torchslim.prune.rules`.
The model is traced with ``torch.fx`` and every tensor's channel dimension (dim 1, or
the one a :class:`~torchslim.prune.rules.Slots` names: tokens, channels-last maps) is
described by a list of *channel variables*, one per position.  Layers create variables
(a conv's output channels), pass them through (BN, ReLU, pooling, depthwise conv) or
couple them (a residual add joins position ``i`` of both operands, a channel shuffle
joins the matching positions of its interleaved halves).  Coupled variables are merged
with a union-find; each merged set is a *channel unit*: removing it removes every
position it occupies in every layer, which keeps all shapes consistent.

Units touching the same layers form a :class:`ChannelGroup` (the output channels of a
conv with its BN and the inputs of its consumers; a whole residual stage).  Variables
that reach the model's input or output, or an operation no rule knows, are *pinned*:
they are never pruned (or, with ``strict=True``, the unknown operation is an error
naming the node).

Planning never changes the model: the trace and a shape-propagation pass run on the
model in eval mode under ``no_grad``, and the caller's training flag is restored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UserError
from .rules import channel_dim, find_function_rule, find_rule, node_slots, qualified_name

__all__ = ["ChannelGraph", "ChannelGroup", "Member", "build_graph", "channel_groups"]


class _Vars:
    """Union-find over channel variables, with a ``pinned`` flag per set."""

    def __init__(self):
        self.parent: list[int] = []
        self.pinned: set[int] = set()

    def new(self, count: int, pinned: bool = False) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        if pinned:
            self.pinned.update(range(start, start + count))
        return list(range(start, start + count))

    def find(self, var: int) -> int:
        root = var
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[var] != root:
            self.parent[var], var = root, self.parent[var]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.pinned:
            self.pinned.add(ra)

    def pin(self, var: int) -> None:
        self.pinned.add(self.find(var))

    def is_pinned(self, var: int) -> bool:
        return self.find(var) in self.pinned


@dataclass
class Member:
    """One layer's channel dimension inside the graph.

    ``role`` is ``"out"`` (the layer's output channels, or the channels a BN or depthwise
    conv carries through) or ``"in"`` (a consumer's input channels / features).
    ``slots[i]`` is the channel variable at position ``i``.
    """

    module: str
    role: str
    slots: list[int]
    input_node: str = ""  # for "in" members: the fx node feeding the layer


@dataclass
class ChannelGroup:
    """Channel units that occupy the same layers; pruned as one 'layer' by selection.

    ``positions[m][u]`` lists the positions unit ``u`` occupies in ``members[m]``; a plain
    conv channel occupies one, a channel flattened into a Linear occupies H*W features.
    ``taps`` are the consumer inputs carrying the group: ``(node name, positions per unit)``.
    """

    index: int
    members: list[Member]
    units: list[int]
    positions: list[list[list[int]]]
    taps: list[tuple[str, list[list[int]]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The first layer producing the channels (e.g. ``features.0``)."""
        outs = [m.module for m in self.members if m.role == "out"]
        return (outs or [self.members[0].module])[0]

    def __len__(self) -> int:
        return len(self.units)

    def describe(self) -> str:
        layers = ", ".join(f"{m.module}.{m.role}" for m in self.members)
        return f"group {self.index} ({self.name}): {len(self.units)} channels over {layers}"

    def __repr__(self) -> str:
        return f"<ChannelGroup {self.describe()}>"


class _Tracer(fx.Tracer):
    """Leaves: every torch.nn module and every module type whose rule takes it whole."""

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        rule = find_rule(module)
        if rule is not None:
            return rule.is_leaf(module)
        return super().is_leaf_module(module, qualname)


def _channels(meta) -> int | None:
    shape = getattr(meta, "shape", None)
    if shape is None or len(shape) < 2:
        return None
    return int(shape[1])


class ChannelGraph:
    """The traced model with its channel variables, members and groups.

    Built by :func:`build_graph`; rules call :meth:`new_channels`, :meth:`couple`,
    :meth:`pin` and :meth:`add_member` while the graph is traced.
    """

    def __init__(self, model: nn.Module, strict: bool = False):
        self.model = model
        self.strict = strict
        self.vars = _Vars()
        self.members: dict[tuple[str, str], Member] = {}
        self.slots: dict[str, object] = {}  # node name -> slots (list), tuple of slots, or None
        self.params: dict[str, str] = {}  # node name -> the parameter it reads ("blocks.0.gamma")
        self.param_dims: dict[str, tuple] = {}  # node name -> parameter dim of each of its dims, if reshaped
        self.macs_owners: dict[str, tuple[str, ...]] = {}
        self.tap_dims: dict[str, int] = {}  # tap node -> its channel dimension, when not 1  # module -> members its own MACs belong to
        self.boundaries: list[str] = []
        self.graph_module: fx.GraphModule | None = None
        self.groups: list[ChannelGroup] = []
        self.node: fx.Node | None = None  # the node being traced (for rules and messages)

    # -- the API rules use --------------------------------------------------------------
    def new_channels(self, count: int, pinned: bool = False) -> list[int]:
        return self.vars.new(count, pinned)

    def couple(self, a: list[int], b: list[int]) -> None:
        """Join ``a[i]`` with ``b[i]``: they are pruned together."""
        if len(a) != len(b):
            raise ValueError(f"cannot couple {len(a)} channels with {len(b)}")
        for x, y in zip(a, b):
            self.vars.union(x, y)

    def pin(self, slots) -> None:
        """Never prune these channels (nested tuples allowed)."""
        for var in _flat(slots):
            self.vars.pin(var)

    def add_member(self, module: str, role: str, slots: list[int]) -> None:
        key = (module, role)
        if key in self.members:  # a module called twice: both calls see the same weights
            self.couple(self.members[key].slots, slots)
            return
        source = ""
        if role == "in" and self.node is not None and self.node.args:
            arg = self.node.args[0]
            source = arg.name if isinstance(arg, fx.Node) else ""
        self.members[key] = Member(module, role, list(slots), source)

    def add_param(self, node: str, dim: int, slots: list[int]) -> None:
        """The parameter node ``node`` reads (``graph.params``; directly or reshaped) has the
        channels ``slots`` along its dimension ``dim``: surgery cuts it with them."""
        owner, _, attr = self.params[node].rpartition(".")
        mapping = self.param_dims.get(node)
        self.add_member(owner, f"{attr}@{dim if mapping is None else mapping[dim]}", slots)

    def attribute_macs(self, owner: str, modules) -> None:
        """The MACs counted in ``owner`` itself (functional attention reading its layers'
        weights) scale with the members of ``modules``."""
        self.macs_owners[owner] = tuple(modules)

    def boundary(self, inputs, out_meta, reason: str):
        """An operation no rule covers: pin its channels, or raise in strict mode."""
        node = self.node
        label = f"{node.op} {qualified_name(node.target)}" if node is not None else "operation"
        if self.strict:
            raise UserError(f"cannot prune through node {node.name!r} ({label}): {reason}; "
                            "register a rule with torchslim.prune.register_rule or "
                            "torchslim.prune.register_function_rule")
        self.boundaries.append(f"{node.name if node is not None else '?'} ({label}): {reason}")
        self.pin(inputs)
        return _fresh_like(self, out_meta, pinned=True)

    # -- queries ---------------------------------------------------------------------------
    def root(self, var: int) -> int:
        return self.vars.find(var)

    def describe(self) -> str:
        lines = [g.describe() for g in self.groups]
        lines += [f"boundary: {b}" for b in self.boundaries]
        return "\n".join(lines)


def _flat(slots):
    if slots is None:
        return
    if isinstance(slots, int):
        yield slots
        return
    for item in slots:
        yield from _flat(item)


def _fresh_like(graph: ChannelGraph, meta, pinned: bool):
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):
        return tuple(_fresh_like(graph, m, pinned) for m in meta)
    count = _channels(meta)
    return None if count is None else graph.new_channels(count, pinned)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # fx raises many types for untraceable code
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"cannot trace {type(model).__name__} with torch.fx ({first}); "
                        "pruning needs a traceable forward") from None


@torch.no_grad()
def _propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    try:
        ShapeProp(gm).propagate(example)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200]
        raise UserError(f"the model cannot run on an input of shape {tuple(example.shape)} ({first})") from None


def _other_dim(slots) -> bool:  # some input carries its channels outside dimension 1
    return any(channel_dim(s) != 1 for s in _lists(slots))


def _lists(slots):
    if isinstance(slots, list):
        yield slots
    elif isinstance(slots, tuple):
        for item in slots:
            yield from _lists(item)


def _call_module(graph: ChannelGraph, gm: fx.GraphModule, node: fx.Node, meta):
    module = gm.get_submodule(node.target)
    inputs = [node_slots(graph, a) for a in node.args]
    rule = find_rule(module)
    if rule is None:
        return graph.boundary(inputs, meta, f"no rule for {type(module).__name__}")
    if not rule.any_dim and _other_dim(inputs):
        return graph.boundary(inputs, meta, f"{type(module).__name__} on channels outside dimension 1")
    in_metas = [a.meta.get("tensor_meta") if isinstance(a, fx.Node) else None for a in node.args]
    return rule.trace(graph, node.target, module, inputs, in_metas, meta)


def _call_function(graph: ChannelGraph, node: fx.Node, meta):
    found = find_function_rule(node)
    inputs = [node_slots(graph, a) for a in (*node.args, *node.kwargs.values())]
    if found is None:
        if meta is None:  # not a tensor (sizes, shapes, Python values): nothing to follow
            return None
        return graph.boundary(inputs, meta, f"no rule for {qualified_name(node.target)}")
    rule, any_dim = found
    if not any_dim and _other_dim(inputs):
        return graph.boundary(inputs, meta, f"{qualified_name(node.target)} on channels outside dimension 1")
    return rule(graph, node, meta)


def _get_attr(graph: ChannelGraph, gm: fx.GraphModule, node: fx.Node) -> None:
    graph.slots[node.name] = None
    owner, _, attr = node.target.rpartition(".")
    try:
        value = getattr(gm.get_submodule(owner), attr)
    except AttributeError:
        return
    if isinstance(value, torch.Tensor):
        graph.params[node.name] = node.target


def _visit(graph: ChannelGraph, gm: fx.GraphModule, node: fx.Node) -> None:
    meta = node.meta.get("tensor_meta")
    graph.node = node
    if node.op == "placeholder":
        graph.slots[node.name] = _fresh_like(graph, meta, pinned=True)
    elif node.op == "get_attr":
        _get_attr(graph, gm, node)
    elif node.op == "output":
        graph.pin(node_slots(graph, node.args))
    elif node.op == "call_module":
        graph.slots[node.name] = _call_module(graph, gm, node, meta)
    else:
        graph.slots[node.name] = _call_function(graph, node, meta)


def _collect_groups(graph: ChannelGraph) -> list[ChannelGroup]:
    touched: dict[int, dict[int, list[int]]] = {}  # root -> {member index: positions}
    members = list(graph.members.values())
    for index, member in enumerate(members):
        for position, var in enumerate(member.slots):
            root = graph.root(var)
            if root in graph.vars.pinned:
                continue
            touched.setdefault(root, {}).setdefault(index, []).append(position)
    by_key: dict[tuple, list[int]] = {}
    for root, where in touched.items():
        by_key.setdefault(tuple(sorted(where)), []).append(root)
    groups = []
    for key, roots in by_key.items():
        first = key[0]
        outs = [i for i in key if members[i].role == "out"]
        first = outs[0] if outs else first
        roots.sort(key=lambda r: touched[r][first][0])
        positions = [[touched[r][i] for r in roots] for i in key]
        groups.append(ChannelGroup(0, [members[i] for i in key], roots, positions))
    order = {name: i for i, name in enumerate(n for n, _ in graph.model.named_modules())}
    groups.sort(key=lambda g: order.get(g.name, len(order)))
    for index, group in enumerate(groups):
        group.index = index
        group.taps = _taps(graph, group)
    return groups


def _taps(graph: ChannelGraph, group: ChannelGroup):
    taps, seen = [], set()
    unit_index = {root: u for u, root in enumerate(group.units)}
    for member in group.members:
        if member.role != "in" or not member.input_node or member.input_node in seen:
            continue
        seen.add(member.input_node)
        slots = graph.slots.get(member.input_node)
        if not isinstance(slots, list):
            continue
        if channel_dim(slots) != 1:
            graph.tap_dims[member.input_node] = channel_dim(slots)
        per_unit: list[list[int]] = [[] for _ in group.units]
        for position, var in enumerate(slots):
            unit = unit_index.get(graph.root(var))
            if unit is not None:
                per_unit[unit].append(position)
        taps.append((member.input_node, per_unit))
    return taps


def build_graph(model: nn.Module, example_inputs=None, strict: bool = False) -> ChannelGraph:
    """Trace ``model`` and find its channel groups; the model is not changed.

    ``example_inputs`` is a tensor (batch of at least 1) or ``None`` to use
    ``model.input_shape``.  ``strict=True`` turns unknown operations into errors.
    """
    if example_inputs is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise UserError("give example_inputs: the model has no input_shape")
        example_inputs = torch.randn(1, *shape)
    was_training = model.training
    model.eval()
    try:
        gm = _trace(model)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        _propagate_shapes(gm, example_inputs.to(device))
        graph = ChannelGraph(model, strict)
        graph.graph_module = gm
        for node in gm.graph.nodes:
            _visit(graph, gm, node)
        graph.node = None
        graph.groups = _collect_groups(graph)
    finally:
        model.train(was_training)
    return graph


def channel_groups(model: nn.Module, example_inputs=None, strict: bool = False) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``; each prints itself."""
    return build_graph(model, example_inputs, strict).groups
