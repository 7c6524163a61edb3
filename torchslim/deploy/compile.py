"""``compile(model)``: a copy of a compressed model whose layers run on their runtime layers.

Every layer type with a lowering (:mod:`torchslim.deploy.lowering`) is lowered: the binary
layers of a frozen quantized model onto packed kernels (below), product-quantized layers
onto lookup tables (:mod:`torchslim.deploy.lut`).

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
import dataclasses
import threading
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError
from ..nn import record_meta
from ..quant import freeze
from ..quant.modules import FrozenConv2d, FrozenLinear, QuantConv2d, QuantLinear
from . import lut  # noqa: F401  # registers the product-quantized layers' lowerings
from .float_layers import fold_float_batchnorm
from .fuse import fuse_chains, fuse_input_quantizers
from .lowering import LoweringTracer, lower_layers, register_lowering
from .residual import fuse_residual_units
from .modules import (
    PackedBinaryConv2d,
    PackedBinaryLinear,
    SkipIdentitySequential,
    plane_encoding,
    set_call_threads,
    wake_kernel_threads,
)

def _packed_binary(module: FrozenConv2d | FrozenLinear, levels: list, threads: int | None) -> nn.Module | None:
    """The bit-packed layer of a frozen layer with codes in {-1,+1} fed ``levels``; None otherwise."""
    codes = module.codes
    if not bool(((codes == 1) | (codes == -1)).all()):
        return None
    try:
        plane_encoding(levels)
    except ValueError:
        return None
    bias = module.bias.detach() if module.bias is not None else None
    if isinstance(module, FrozenConv2d):
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or isinstance(module.padding, str):
            return None
        packed = PackedBinaryConv2d.from_codes(codes, module.scale, bias, module.stride, module.padding, levels)
    else:
        packed = PackedBinaryLinear.from_codes(codes, module.scale, bias, levels)
    packed.threads = threads
    return packed


for _frozen in (FrozenConv2d, FrozenLinear):
    register_lowering(_frozen, _packed_binary, needs_input_levels=True, kernel_threads=True, exact=True)


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
    """Sequentials holding folded layers or packed convs run as :class:`SkipIdentitySequential`
    (Identity skipped, chained packed layers in one native call)."""
    for module in model.modules():
        if type(module) is nn.Sequential and any(type(child) in (nn.Identity, PackedBinaryConv2d)
                                                 for child in module):
            module.__class__ = SkipIdentitySequential


@dataclass
class CompileConfig(ConfigMixin):
    """How :func:`compile` lowers a model.

    ``threads`` fixes the kernels' thread count (default: torch's at call time).  With
    ``chain``, consecutive packed convs pass packed activations to each other (see
    :mod:`torchslim.deploy.fuse`); outputs are the same bit for bit either way.
    ``float_threads`` caps torch's threads for the remaining float layers during a call (see
    the module doc; None leaves torch's setting alone).  The cap is a forward hook: a
    compiled model saved and loaded again runs without it.  ``exact=False`` also folds the BatchNorm
    after a float conv into it where no packing took it (:mod:`torchslim.deploy.float_layers`): one
    torch call fewer, outputs within float rounding of the frozen model instead of bit for bit.
    """

    option_kind = "compile option"
    threads: int | None = None
    chain: bool = True
    float_threads: int | None = 1
    exact: bool = True


def compile(model: nn.Module, config: CompileConfig | None = None, data=None, **options) -> nn.Module:
    """A copy of ``model`` whose compressed layers run on their runtime layers (binary layers
    on the bit-packed kernels, product-quantized layers on lookup tables).

    Quantization-aware (not yet frozen) models are frozen first.  ``options`` (e.g.
    ``threads=2``) override fields of ``config``.  ``data`` is not needed: lowering is exact
    and needs no calibration; it is accepted so every verb has the same shape.
    """
    CompileConfig.from_dict(options)  # unknown option names are a one-line error
    config = dataclasses.replace(config or CompileConfig(), **options)
    threads, chain, float_threads = config.threads, config.chain, config.float_threads
    if any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules()):
        model = freeze(model)
    compiled = copy.deepcopy(model).eval()
    try:
        graph = LoweringTracer().trace(compiled)
    except Exception as exc:  # fx reports untraceable control flow with many exception types
        raise UserError(f"cannot trace {type(model).__name__} to find its compressed layers: {exc}") from None
    replaced, kernel_threads = lower_layers(compiled, graph, threads)
    chained = fuse_chains(compiled, graph) if chain else []
    folded = fuse_input_quantizers(compiled, graph) if chain else []
    residual = fuse_residual_units(compiled) if chain else []
    float_folded = [] if config.exact else fold_float_batchnorm(compiled, graph)
    _skip_folded(compiled)
    if float_threads is not None and kernel_threads:
        ThreadPolicy(float_threads, threads).attach(compiled)
    record_meta(compiled, compiled=config.to_dict(), compiled_layers=replaced, chained_layers=chained,
                folded_quantizers=folded, residual_units=residual,
                float_batchnorm_folded=float_folded)
    return compiled


def memory_report(model: nn.Module) -> dict:
    """Bytes of the packed binary weights against the same weights in float32."""
    packed = [m for m in model.modules() if isinstance(m, PackedBinaryConv2d)]
    weights = sum(m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in packed)
    packed_bytes = sum(m.packed_bytes() for m in packed)
    return {"binary_layers": len(packed), "binary_weights": weights, "packed_bytes": packed_bytes,
            "float32_bytes": 4 * weights, "ratio": (4 * weights / packed_bytes) if packed_bytes else None}
