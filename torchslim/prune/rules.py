"""The rule registries the channel graph runs on.

A *module rule* (:class:`Rule`) says how channels flow through one module type
(``trace``) and how to cut it (``prune_out`` keeps output channels, ``prune_in`` input
channels, ``prune_param`` one parameter along one dimension).  A *function rule*
``rule(graph, node, meta) -> slots`` does the same for a function or tensor method.
:mod:`~torchslim.prune.graph` is the engine that applies them; the built-in rules live in
:mod:`~torchslim.prune.layers`, :mod:`~torchslim.prune.ops`,
:mod:`~torchslim.prune.shapes` and :mod:`~torchslim.prune.attention` and register when
the package is imported.

Slots: the channel variables of a tensor are a list, one per position of its channel
dimension.  A plain list means dimension 1 (``N, C, ...``); a :class:`Slots` carries
another dimension (``N, L, C`` tokens, channels-last ``N, H, W, C``).  Rules that only
understand dimension 1 leave ``any_dim`` False and never see a :class:`Slots`: the engine
makes such a node a boundary.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..nn import TypeRegistry

__all__ = [
    "Rule", "Slots", "at_dim", "channel_dim", "couple_heads", "cut", "find_function_rule", "find_rule",
    "module_path", "node_slots", "qualified_name", "register_function_rule", "register_rule",
    "register_width_attribute", "width_attributes",
]


class Slots(list):
    """Channel variables of a tensor whose channels sit in dimension ``dim`` (not 1)."""

    def __init__(self, items, dim: int):
        super().__init__(items)
        self.dim = dim


def channel_dim(slots) -> int:
    return getattr(slots, "dim", 1)


def at_dim(items, dim: int):
    """Slots for channels in dimension ``dim`` (non-negative)."""
    return list(items) if dim == 1 else Slots(items, dim)


def qualified_name(target) -> str:
    """``torch.nn.functional.layer_norm`` for a function, the name itself for a method:
    stable from run to run (no memory addresses)."""
    if isinstance(target, str):
        return target
    short = getattr(target, "__name__", None)
    if short and getattr(torch, short, None) is target:  # C builtins: torch.cumsum, not its class
        return f"torch.{short}"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{name}" if module else name


def node_slots(graph, arg):
    """Slots of an fx argument (nested lists/tuples of nodes become tuples)."""
    if isinstance(arg, fx.Node):
        return graph.slots.get(arg.name)
    if isinstance(arg, (list, tuple)):
        return tuple(node_slots(graph, a) for a in arg)
    return None


def couple_heads(graph, slots, heads: int) -> None:
    """Position ``j`` of every head (every equal block of ``slots``) is pruned together."""
    size = len(slots) // heads
    for head in range(1, heads):
        graph.couple(slots[:size], slots[head * size:(head + 1) * size])


def module_path(node: fx.Node) -> str:
    """The innermost module whose forward made ``node`` ("" for the top module)."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return stack[-1][0] if stack else ""


def cut(module: nn.Module, name: str, keep: torch.Tensor, dim: int) -> None:
    """Keep the entries ``keep`` of tensor attribute ``name`` along ``dim``."""
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    data = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(data, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, data)


class Rule:
    """How one module type carries channels, and how to cut it.

    ``trace(graph, name, module, inputs, in_metas, out_meta)`` gets the input slots and
    returns the output slots; it declares the module's channel dimensions with
    ``graph.add_member(name, "out" | "in", slots)``.  ``any_dim``: the rule handles
    channels outside dimension 1.  ``is_leaf``: trace the module as one node (False makes
    the tracer follow its forward, e.g. a subclass that rewires its parent's computation).
    """

    any_dim = False

    def is_leaf(self, module: nn.Module) -> bool:
        return True

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        raise NotImplementedError

    def prune_out(self, module: nn.Module, keep: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot prune output channels")

    def prune_in(self, module: nn.Module, keep: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot prune input channels")

    def prune_param(self, module: nn.Module, attr: str, dim: int, keep: torch.Tensor) -> None:
        """A parameter the forward reads directly (``F.layer_norm(x, ..., self.weight)``)."""
        cut(module, attr, keep, dim)


_MODULES = TypeRegistry("prune rule")  # None: the type is a boundary
_WIDTHS: dict[str, tuple[str, ...]] = {}
_FUNCTIONS: dict = {}
_METHODS: dict[str, tuple] = {}
_NAMED: dict[str, tuple] = {}


def register_rule(module_type: type, rule: Rule | None) -> None:
    """Use ``rule`` for ``module_type`` and its subclasses (later registrations win);
    ``None`` makes the type a boundary."""
    _MODULES[module_type] = rule


def find_rule(module: nn.Module) -> Rule | None:
    return _MODULES.find(module)


def register_width_attribute(class_name: str, *attrs: str) -> None:
    """Attributes of a module class (qualified name) that hold a channel count its forward
    reshapes to (``x.reshape(n, self.hidden_dim, -1)``): surgery sets them to the count kept.
    A reshape to any other constant channel count is a boundary."""
    _WIDTHS[class_name] = _WIDTHS.get(class_name, ()) + attrs


def width_attributes(module: nn.Module) -> tuple[str, ...]:
    return _WIDTHS.get(qualified_name(type(module)), ())


def register_function_rule(target, rule, any_dim: bool = False) -> None:
    """Register ``rule(graph, node, meta) -> slots`` for ``target``: a function, a tensor
    method name (``"flatten"``) or the qualified name of a function in a package torchslim
    does not import (``"torchvision.ops.stochastic_depth.stochastic_depth"``).
    ``any_dim``: the rule handles channels outside dimension 1."""
    if not isinstance(target, str):
        _FUNCTIONS[target] = (rule, any_dim)
    elif "." in target:
        _NAMED[target] = (rule, any_dim)
    else:
        _METHODS[target] = (rule, any_dim)


def find_function_rule(node: fx.Node):
    """``(rule, any_dim)`` for a call_function / call_method node, or None."""
    if node.op == "call_method":
        return _METHODS.get(node.target)
    try:
        found = _FUNCTIONS.get(node.target)
    except TypeError:  # an unhashable callable
        found = None
    return found or _NAMED.get(qualified_name(node.target))
