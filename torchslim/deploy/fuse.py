"""Chain packed binary layers so activations stay bit-packed between them.

A chain ``packed conv -> [BatchNorm2d] -> ActQuant -> [MaxPool2d] -> packed conv``
becomes ``packed conv (packed output) -> packed conv (packed input)``, the middle
modules replaced by ``nn.Identity``.  When the chain ends elsewhere (the float
classifier), the packed conv emits the quantized levels as floats instead.  The float work between the two convs is a
per-channel function of the first conv's integer-exact value ``v``:

    level(v) = ActQuant(BN(v * scale + bias))

Every step is a monotone float operation, so ``level`` is monotone in ``v`` (up or
down with the sign of scale * gamma) and "level >= k" is exactly "sgn * v >= t_k" for
a float threshold ``t_k``.  The thresholds are found by bisection on the float32
ordering, evaluating the very modules the float model runs, so the packed chain
makes the same decisions bit for bit.  The max of thermometer-coded levels over a
pooling window is the OR of their bits; a binary-weighted next layer gets the bits of
the pooled level index, derived from those thermometer bits.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..nn import set_submodule
from ..quant.modules import ActQuant
from .kernels import MAX_NATIVE_PLANES
from .modules import PackedBinaryConv2d, threshold_count

_SIGN_BIT = 1 << 31


def _to_key(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 keys with the same order (-0.0 and +0.0 share key 0)."""
    bits = values.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, -(bits & (_SIGN_BIT - 1)))


def _from_key(keys: torch.Tensor) -> torch.Tensor:
    bits = torch.where(keys >= 0, keys, (-keys) | _SIGN_BIT)
    bits = torch.where(bits >= _SIGN_BIT, bits - (1 << 32), bits)
    return bits.to(torch.int32).view(torch.float32)


def _level_index(values: torch.Tensor, scale, bias, bn, act) -> torch.Tensor:
    """Level index the float model reaches from conv values ``values`` [OC, M] (per channel)."""
    with torch.no_grad():
        y = values * scale.view(-1, 1)
        if bias is not None:
            y = y + bias.view(-1, 1)
        y = y.reshape(1, values.shape[0], values.shape[1], 1)
        if bn is not None:
            y = bn(y)
        out = act(y).reshape(values.shape)
        levels = act.levels.to(out.dtype)
        return (out.unsqueeze(-1) == levels).to(torch.int64).argmax(-1)


def fold_thresholds(layer: PackedBinaryConv2d, bn: nn.Module | None, act: nn.Module) -> tuple:
    """(thresholds [Q, OC], sgn [OC]): plane k of the next input is set where sgn * v >= thresholds[k].

    In sign mode (levels {-1, +1}) Q = 1 and the plane marks level 1 (+1); the kernel
    stores its complement, bit 1 meaning -1.
    """
    steps = 1.0 if layer.steps is None else float(layer.steps.abs().sum())
    bound = steps * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] * 1.5 + 2.0
    bias = None if layer.bias is None else layer.bias.float()
    return _bisect_thresholds(layer.scale.float(), bias, bound, bn, act)


def fold_input_thresholds(bn: nn.Module | None, act: nn.Module, channels: int) -> tuple:
    """(thresholds [Q, C], sgn [C]): level k + 1 of ``act(bn(x))`` is reached where sgn * x >= thresholds[k].

    The same bisection over every finite float32 input: x itself is the value, not an integer sum.
    """
    bound = float(torch.finfo(torch.float32).max)
    return _bisect_thresholds(torch.ones(channels), None, bound, bn, act)


def _bisect_thresholds(scale, bias, bound: float, bn, act) -> tuple:
    """Per channel, the least float32 t in [-bound, bound] with level(sgn * t) >= k + 1, for every k."""
    oc = scale.numel()
    ends = torch.tensor([-bound, bound]).repeat(oc, 1)
    low_high = _level_index(ends, scale, bias, bn, act)
    sgn = torch.where(low_high[:, 1] >= low_high[:, 0], 1.0, -1.0)
    planes = len(act.levels) - 1
    targets = torch.arange(1, planes + 1).repeat(oc, 1)  # level reached by plane k: k + 1

    def reached(values):  # [OC, Q] values of t -> level(sgn * t) >= k + 1
        return _level_index(values * sgn.view(-1, 1), scale, bias, bn, act) >= targets

    lo = _to_key(torch.full((oc, planes), -bound))
    hi = _to_key(torch.full((oc, planes), bound))
    always, never = reached(_from_key(lo)), ~reached(_from_key(hi))
    while bool(((hi - lo) > 1).any()):
        mid = (lo + hi) // 2
        up = reached(_from_key(mid))
        hi, lo = torch.where(up, mid, hi), torch.where(up, lo, mid)
    thresholds = _from_key(hi)
    thresholds = torch.where(always, float("-inf"), torch.where(never, float("inf"), thresholds))
    return thresholds.t().contiguous(), sgn


def _poolable(module: nn.Module) -> int | None:
    """The window of a max pool the kernels can fuse (square, stride = window, no padding), else None."""
    if not isinstance(module, nn.MaxPool2d) or module.ceil_mode or module.return_indices:
        return None
    pairs = [module.kernel_size, module.stride, module.padding, module.dilation]
    k, s, p, d = [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in pairs]
    if k[0] != k[1] or s != k or p != (0, 0) or d != (1, 1):
        return None
    return int(k[0])


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_module" else None


def _chain(node: fx.Node, modules: dict, calls: dict):
    """(bn, act, pool, consumer, middle nodes) when ``node`` starts a fusable chain, else None.

    ``consumer`` is the packed conv that takes the chain's output, or None when the
    output goes elsewhere: then the layer emits the quantized float levels themselves.
    """
    bn = pool = None
    middle = []
    nxt = _single_user(node)
    if nxt is not None and isinstance(modules[nxt.target], nn.BatchNorm2d):
        bn = modules[nxt.target]
        if bn.training or not bn.track_running_stats or bn.running_mean is None:
            return None
        middle.append(nxt)
        nxt = _single_user(nxt)
    if nxt is None or not isinstance(modules[nxt.target], ActQuant):
        return None
    act = modules[nxt.target]
    middle.append(nxt)
    nxt = _single_user(nxt)
    if nxt is not None and _poolable(modules[nxt.target]):
        pool = modules[nxt.target]
        middle.append(nxt)
        nxt = _single_user(nxt)
    if any(calls[n.target] != 1 for n in [node, *middle]):
        return None
    consumer = None
    if nxt is not None and type(modules[nxt.target]) is PackedBinaryConv2d and nxt.args[0] is middle[-1]:
        consumer = modules[nxt.target]
        if consumer.levels != [float(v) for v in act.levels] or calls[nxt.target] != 1 or consumer.packed_input:
            consumer = None
    return bn, act, pool, consumer, middle


def _call_counts(graph: fx.Graph) -> dict:
    calls: dict = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _folded_batchnorm(node: fx.Node, modules: dict, calls: dict) -> fx.Node | None:
    """The eval-mode BatchNorm2d node feeding only ``node`` (an activation quantizer), else None."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
        return None
    bn = modules[source.target]
    if type(bn) is not nn.BatchNorm2d or bn.training or not bn.track_running_stats or bn.running_mean is None:
        return None
    return source if calls[source.target] == 1 else None


def fuse_input_quantizers(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Fold an activation quantizer that feeds only a packed conv into that conv's packing,
    with the BatchNorm in front of it when there is one (typically after the float first layer).

    ``Q(x) = levels[#{k : x >= t_k}]`` (or ``>``), so the thermometer planes of Q(x) are
    the comparisons themselves and its sign bit is the negated comparison.  With a
    BatchNorm, ``Q(BN(x))`` is monotone in x per channel, so its planes are
    ``sgn[c] * x >= t[k][c]`` for thresholds found as in :func:`fold_thresholds`.
    """
    modules, calls = dict(model.named_modules()), _call_counts(graph)
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) is not PackedBinaryConv2d:
            continue
        layer, source = modules[node.target], node.args[0]
        if layer.packed_input or layer.in_compare is not None or not isinstance(source, fx.Node):
            continue
        act = modules.get(source.target) if source.op == "call_module" else None
        if not isinstance(act, ActQuant) or len(source.users) != 1 or calls[source.target] != 1:
            continue
        if [float(v) for v in act.levels] != layer.levels:
            continue
        bn_node = _folded_batchnorm(source, modules, calls)
        if bn_node is not None and modules[bn_node.target].num_features == layer.in_channels:
            thresholds, sgn = fold_input_thresholds(modules[bn_node.target], act, layer.in_channels)
            layer.fuse_input(thresholds, "ge" if layer.thresholds is not None else "not_ge", sgn)
            for target in (bn_node.target, source.target):
                set_submodule(model, target, nn.Identity())
                folded.append(target)
            continue
        ties_up = act.quantizer.ties_up
        if layer.thresholds is None:
            compare = "not_ge" if ties_up else "not_gt"
        else:
            compare = "ge" if ties_up else "gt"
        layer.fuse_input(act.thresholds.tolist(), compare)
        set_submodule(model, source.target, nn.Identity())
        folded.append(source.target)
    return folded


def fuse_chains(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Fold BN, quantizer and pool after each packed conv of ``model`` into it, in place.

    Returns the names of the convs that now emit packed planes or quantized levels.
    """
    modules, calls = dict(model.named_modules()), _call_counts(graph)
    fused = []
    for node in list(graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) is not PackedBinaryConv2d:
            continue
        layer = modules[node.target]
        found = _chain(node, modules, calls)
        if found is None or layer.out_levels is not None or threshold_count(found[1].levels) > MAX_NATIVE_PLANES:
            continue
        bn, act, pool, consumer, middle = found
        thresholds, sgn = fold_thresholds(layer, bn, act)
        layer.fuse_output([float(v) for v in act.levels], _poolable(pool) if pool is not None else 1,
                          thresholds, sgn, values=consumer is None)
        if consumer is not None:
            consumer.packed_input = True
        for mid in middle:
            set_submodule(model, mid.target, nn.Identity())
        fused.append(node.target)
    return fused
