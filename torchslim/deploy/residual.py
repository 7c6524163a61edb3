"""Fold the real-valued residual unit around a packed binary conv into the conv's epilogue.

Accurate binary networks (Bi-Real-Net, ReActNet: ``torchslim.models.bireal``) wrap every
binary conv in a unit of float operations:

    x -> [BN -> sign or 2-bit levels] -> binary conv (-> BN) -> + shortcut(x) -> RPReLU [-> max pool]

:func:`torchslim.deploy.fuse.fuse_input_quantizers` already folds the input BN and the
quantizer into the conv's packing, and freezing folds the output BN into its scale and
bias.  What is left runs as half a dozen small torch operations per unit, about 70 us of
Python and dispatch each at the widths binary networks ship at, ten times the
convolution itself.  Here any module whose traced graph is exactly such a unit around
one packed conv (ours, or a user's written the same way) is replaced by that conv with
a residual epilogue: the shortcut add, the per-channel biases and PReLU, and a following
max pool run natively in the conv's call, and consecutive units pass float values to one
another in one native call (:class:`torchslim.deploy.modules.SkipIdentitySequential`).

Recognised, in this order, each optional but the conv and add:

- the conv's input is the unit's input ``x`` (through ``nn.Identity`` left by folding);
- an eval-mode BatchNorm after the conv: folded into its scale and bias with the arithmetic
  of the packed file (:func:`torchslim.export.save_frozen`, ``fold_bn``), so the compiled
  unit equals the saved model bit for bit, and the unfolded frozen one to float rounding;
- ``conv(x) + shortcut(x)``, the shortcut ``x`` itself, or average-pooled by its stride
  (``nn.AvgPool2d(k)``), with zero channels appended (``F.pad(..., (0, 0, 0, 0, 0, extra))``);
- then ``+ bias`` (a per-channel ``[1, C, 1, 1]`` tensor), ``nn.PReLU``, ``+ bias`` (RPReLU);
- in a Sequential, a max pool right after the unit (window = stride, no padding).

Anything else (another op, a second use of an intermediate value) leaves the unit as it
is.  The epilogue runs the same float operations in the same order, so the compiled unit
equals the frozen one bit for bit where the conv does (sign activations).
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn import set_submodule
from ..quant.modules import scale_bias_with_batchnorm
from .fuse import _poolable
from .lowering import LoweringTracer
from .modules import PackedBinaryConv2d

_ADD = (operator.add, torch.add)


def _is_module(node: fx.Node, modules: dict, kind) -> bool:
    return node.op == "call_module" and type(modules.get(node.target)) is kind


def _back(node, modules: dict, used: set):
    """``node`` with the ``nn.Identity`` calls in front of it stepped over (recorded in ``used``), backwards."""
    while isinstance(node, fx.Node) and _is_module(node, modules, nn.Identity):
        used.add(node)
        node = node.args[0]
    return node


def _forward(node: fx.Node, modules: dict, used: set) -> fx.Node | None:
    """The single user of ``node`` past any ``nn.Identity`` calls (recorded in ``used``), else None."""
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if not _is_module(node, modules, nn.Identity):
            return node
        used.add(node)


def _shortcut_pool(node, x: fx.Node, modules: dict, extra: int, used: set) -> int | None:
    """The average pool window of a shortcut ``node`` computed from ``x`` (1: x itself), else None."""
    node = _back(node, modules, used)
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target is F.pad:
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        if tuple(pad or ()) != (0, 0, 0, 0, 0, extra) or mode != "constant" or value not in (None, 0, 0.0):
            return None
        used.add(node)
        node = _back(node.args[0], modules, used)
    elif extra != 0:
        return None
    window = 1
    if isinstance(node, fx.Node) and _is_module(node, modules, nn.AvgPool2d):
        pool = modules[node.target]
        k, s, p = [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (pool.kernel_size, pool.stride,
                                                                                    pool.padding)]
        if k[0] != k[1] or s != k or p != (0, 0) or pool.ceil_mode or pool.divisor_override is not None:
            return None
        window = int(k[0])
        used.add(node)
        node = _back(node.args[0], modules, used)
    return window if node is x else None


def _channel_tensor(root: nn.Module, node, channels: int) -> torch.Tensor | None:
    """A per-channel constant (``[1, C, 1, 1]``, ``[C, 1, 1]`` or one value) fetched by a get_attr node."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = functools.reduce(getattr, node.target.split("."), root)
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
        return None
    if value.numel() == 1 or tuple(value.shape) in ((1, channels, 1, 1), (channels, 1, 1)):
        return value.detach().reshape(-1).expand(channels)
    return None


def _match(unit: nn.Module, graph: fx.Graph) -> tuple | None:
    """(conv, BatchNorm or None, shortcut pool window, bias_in, slope, bias_out) when ``unit``'s graph is a residual unit."""
    modules = dict(unit.named_modules())
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    convs = [n for n in graph.nodes if _is_module(n, modules, PackedBinaryConv2d)]
    if len(inputs) != 1 or len(convs) != 1:
        return None
    x, conv_node = inputs[0], convs[0]
    conv = modules[conv_node.target]
    if conv.in_compare is None or conv.packed_input or conv.out_levels is not None or conv.has_residual:
        return None
    used = {x, conv_node}
    start = conv_node.args[0]
    while start is not x:  # the Identity calls between x and the conv
        if not (isinstance(start, fx.Node) and _is_module(start, modules, nn.Identity)):
            return None
        used.add(start)
        start = start.args[0]
    node = _forward(conv_node, modules, used)
    bn = None
    if node is not None and _is_module(node, modules, nn.BatchNorm2d):
        bn = modules[node.target]
        if bn.training or not bn.track_running_stats or bn.running_mean is None or not bn.affine:
            return None
        used.add(node)
        node = _forward(node, modules, used)
    if node is None or node.op != "call_function" or node.target not in _ADD or len(node.args) != 2:
        return None
    path = used - {x}  # the conv and what follows it up to the add
    first, second = node.args
    if first in path:
        other = second
    elif second in path:
        other = first
    else:
        return None
    used.add(node)
    pool = _shortcut_pool(other, x, modules, conv.out_channels - conv.in_channels, used)
    if pool is None:
        return None
    act = {}
    while True:
        nxt = _forward(node, modules, used)
        if nxt is None or nxt.op == "output":
            break
        if nxt.op == "call_function" and nxt.target in _ADD and len(nxt.args) == 2 and node in nxt.args:
            bias_node = nxt.args[1] if nxt.args[0] is node else nxt.args[0]
            bias = _channel_tensor(unit, bias_node, conv.out_channels)
            slot = "bias_in" if "bias_in" not in act and "prelu" not in act else "bias_out"
            if bias is None or slot in act:
                return None
            act[slot] = bias
            used.add(bias_node)
        elif _is_module(nxt, modules, nn.PReLU) and "prelu" not in act and "bias_out" not in act:
            weight = modules[nxt.target].weight
            if weight.numel() not in (1, conv.out_channels):
                return None
            act["prelu"] = weight.detach().reshape(-1).expand(conv.out_channels)
        else:
            return None
        used.add(nxt)
        node = nxt
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(outputs) != 1 or outputs[0].args[0] is not node:
        return None
    if any(n.op != "output" and n not in used for n in graph.nodes):
        return None  # some other operation: not this unit
    return conv, bn, pool, act.get("bias_in"), act.get("prelu"), act.get("bias_out")


def _trace(module: nn.Module) -> fx.Graph | None:
    try:
        return LoweringTracer().trace(module)
    except Exception:  # untraceable code is simply not a unit we fold
        return None


def fuse_residual_units(model: nn.Module) -> list[str]:
    """Replace each residual unit around a packed conv in ``model`` by the conv with its epilogue,
    in place, then fold a max pool that follows a replaced unit in a Sequential.  Returns the
    replaced units' names."""
    fused = []
    for name, unit in list(model.named_modules()):
        if not name or isinstance(unit, PackedBinaryConv2d):
            continue
        if sum(isinstance(m, PackedBinaryConv2d) for m in unit.modules()) != 1:
            continue
        graph = _trace(unit)
        found = None if graph is None else _match(unit, graph)
        if found is None:
            continue
        conv, bn, pool, bias_in, slope, bias_out = found
        if bn is not None:  # as the packed file folds it: the compiled unit equals the saved model bit for bit
            conv.set_scale_bias(*scale_bias_with_batchnorm(conv.scale, conv.bias, bn))
        conv.fuse_residual(pool, bias_in, slope, bias_out)
        set_submodule(model, name, conv)
        fused.append(name)
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            _fold_following_pools(parent)
    return fused


def _fold_following_pools(sequence: nn.Sequential) -> None:
    children = list(sequence._modules.items())
    for i, (_, child) in enumerate(children):
        if type(child) is not PackedBinaryConv2d or not child.has_residual or child.float_pool > 1:
            continue
        j = i + 1
        while j < len(children) and type(children[j][1]) is nn.Identity:
            j += 1
        if j < len(children) and type(children[j][1]) is nn.MaxPool2d and _poolable(children[j][1]):
            child.fuse_float_pool(_poolable(children[j][1]))
            sequence._modules[children[j][0]] = nn.Identity()
