"""``compile(model)``: run the binary layers of a frozen quantized model on packed kernels.

A frozen layer (``FrozenConv2d`` / ``FrozenLinear`` with codes in {-1,+1}) is
replaced by a packed layer when its input provably holds quantized values: the
nearest producer, looking back through ops that keep a value set (max pooling,
flatten, dropout, identity), is an activation quantizer with levels {-1,+1} or
0 = L0 < L1 < ....  Then (``chain=True``, see :mod:`torchslim.deploy.fuse`) the
BatchNorm, activation quantizer and max pool between two packed convs are folded
into the first one's output packing, and a quantizer feeding only a packed conv
(with the BatchNorm before it, typically after the float first layer) into that
conv's input packing; the folded modules become ``nn.Identity``.
Everything else (the float first and last layers) stays as it is.  The caller's
model is not modified.

Threads: the packed kernels run on their own small pool (the caller plus workers
that claim work items; no barrier), torch's float layers on OpenMP.  Sharing cores,
the two get in each other's way: an OpenMP region waits at a barrier for every
thread, and its threads keep spinning after it, on the core the pool's worker
needs next (and the pool's worker spins briefly on the core the next OpenMP region
needs).  At the small batches binary networks are deployed at, the float first and
last layers are a small part of the time, so by default the compiled model runs
them on ``float_threads`` = 1 torch thread while its kernels use torch's thread
count (or ``threads``); see :class:`ThreadPolicy`.
"""

from __future__ import annotations

import copy
import operator
import threading

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UserError
from ..nn import record_meta, set_submodule
from ..quant import freeze
from ..quant.modules import ActQuant, FrozenConv2d, FrozenLinear, QuantConv2d, QuantLinear
from .fuse import fuse_chains, fuse_input_quantizers
from .modules import (
    PackedBinaryConv2d,
    PackedBinaryLinear,
    SkipIdentitySequential,
    plane_encoding,
    set_call_threads,
    wake_kernel_threads,
)

# Ops through which quantized values stay quantized (same value set).
_VALUE_PRESERVING_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_VALUE_PRESERVING_FUNCTIONS = (torch.flatten, F.max_pool2d, operator.getitem)


class _Tracer(fx.Tracer):
    """Keep quantization and packed layers as leaves, so the graph shows them as single nodes."""

    def is_leaf_module(self, module, qualname):
        kind = type(module).__module__
        return kind.startswith(("torchslim.quant", "torchslim.deploy")) or super().is_leaf_module(module, qualname)


def _quantized_input_levels(node: fx.Node, modules: dict) -> list | None:
    source = node.args[0] if node.args else None
    while isinstance(source, fx.Node):
        if source.op == "call_module":
            module = modules[source.target]
            if isinstance(module, ActQuant):
                return [float(v) for v in module.levels]
            if not isinstance(module, _VALUE_PRESERVING_MODULES):
                return None
        elif not (source.op == "call_function" and source.target in _VALUE_PRESERVING_FUNCTIONS) and not (
                source.op == "call_method" and source.target in ("flatten", "view", "reshape")):
            return None
        source = source.args[0]
    return None


def _packed_replacement(module: nn.Module, levels: list) -> nn.Module | None:
    codes = getattr(module, "codes", None)
    if codes is None or not bool(((codes == 1) | (codes == -1)).all()):
        return None
    try:
        plane_encoding(levels)
    except ValueError:
        return None
    bias = module.bias.detach() if module.bias is not None else None
    if isinstance(module, nn.Module) and hasattr(module, "kernel_size"):
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or isinstance(module.padding, str):
            return None
        return PackedBinaryConv2d.from_codes(codes, module.scale, bias, module.stride, module.padding, levels)
    return PackedBinaryLinear.from_codes(codes, module.scale, bias, levels)


_SAVED = threading.local()  # per calling thread: (torch threads, kernel threads) of the calls in progress


class ThreadPolicy:
    """Forward hooks of a compiled model: for the duration of a call, torch runs the float
    layers on at most ``float_threads`` threads, and the packed kernels get the thread
    count torch had when the call began (a layer's own ``threads`` still wins).

    Threads are per process in torch, so the lowered count holds for the whole call; it
    is restored afterwards, also when the call raises.
    """

    def __init__(self, float_threads: int, kernel_threads: int | None = None):
        self.float_threads = int(float_threads)
        self.kernel_threads = kernel_threads  # compile(threads=...), which the layers then use

    def attach(self, model: nn.Module) -> None:
        model.register_forward_pre_hook(self.enter)
        model.register_forward_hook(self.leave, always_call=True)

    def enter(self, _module, _args) -> None:
        threads = torch.get_num_threads()
        stack = _SAVED.__dict__.setdefault("stack", [])
        stack.append((threads, set_call_threads(threads)))
        if threads > self.float_threads:
            torch.set_num_threads(self.float_threads)
        kernels = self.kernel_threads or threads
        if kernels > 1:  # the kernels' workers spin through the float first layers instead of sleeping
            wake_kernel_threads(kernels)

    def leave(self, _module, _args, _output) -> None:
        threads, previous = _SAVED.stack.pop()
        set_call_threads(previous)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _skip_folded(model: nn.Module) -> None:
    for module in model.modules():
        if type(module) is nn.Sequential and any(type(child) is nn.Identity for child in module):
            module.__class__ = SkipIdentitySequential


def compile(model: nn.Module, threads: int | None = None, chain: bool = True,
            float_threads: int | None = 1) -> nn.Module:
    """A copy of ``model`` whose binary layers run on the bit-packed kernels.

    Quantization-aware (not yet frozen) models are frozen first.  ``threads`` fixes
    the kernels' thread count (default: torch's at call time).  With ``chain``,
    consecutive packed convs pass packed activations to each other (see
    :mod:`torchslim.deploy.fuse`); outputs are the same bit for bit either way.
    ``float_threads`` caps torch's threads for the remaining float layers during a
    call (see the module doc; None leaves torch's setting alone).  The cap is a
    forward hook: a compiled model saved and loaded again runs without it.
    """
    if any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules()):
        model = freeze(model)
    compiled = copy.deepcopy(model).eval()
    try:
        graph = _Tracer().trace(compiled)
    except Exception as exc:  # fx reports untraceable control flow with many exception types
        raise UserError(f"cannot trace {type(model).__name__} to find its binary layers: {exc}") from None
    modules = dict(compiled.named_modules())
    replaced = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], (FrozenConv2d, FrozenLinear)):
            continue
        levels = _quantized_input_levels(node, modules)
        packed = _packed_replacement(modules[node.target], levels) if levels else None
        if packed is None:
            continue
        packed.threads = threads
        set_submodule(compiled, node.target, packed)
        replaced.append(node.target)
    chained = fuse_chains(compiled, graph) if chain else []
    folded = fuse_input_quantizers(compiled, graph) if chain else []
    _skip_folded(compiled)
    if float_threads is not None and replaced:
        ThreadPolicy(float_threads, threads).attach(compiled)
    record_meta(compiled, compiled_layers=replaced, chained_layers=chained, folded_quantizers=folded)
    return compiled


def memory_report(model: nn.Module) -> dict:
    """Bytes of the packed binary weights against the same weights in float32."""
    packed = [m for m in model.modules() if isinstance(m, PackedBinaryConv2d)]
    weights = sum(m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in packed)
    packed_bytes = sum(m.packed_bytes() for m in packed)
    return {"binary_layers": len(packed), "binary_weights": weights, "packed_bytes": packed_bytes,
            "float32_bytes": 4 * weights, "ratio": (4 * weights / packed_bytes) if packed_bytes else None}
