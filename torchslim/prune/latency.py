"""Measured per-layer latency tables: pruning to a latency target on the deployment runtime.

MACs are a poor proxy for CPU time: a narrow layer at high resolution costs more per MAC
than a wide deep one, and runtimes have fast and slow channel counts (ONNX Runtime's
blocked conv kernels want multiples of 8).  So, for every layer whose channels pruning
can change, :func:`measure_tables` times the layer alone, batch 1, on the runtime the
model will ship with (eager ``torch``, ``ort`` = ONNX Runtime, or ``openvino`` = OpenVINO
fp32 on the CPU), over a grid of kept
channel counts (in x out), and :class:`LayerTable` interpolates it bilinearly.

The whole model is timed once too, and a pruned model's latency is predicted as the
base's measured time minus the savings the tables give for each layer.  Only the
differences of one layer's times enter, so the per-call overhead of timing a layer
alone cancels.  On ``ort`` a layer's time is its kernel's, from the runtime's own
profiler: a lone conv in the blocked NCHWc layout needs a reorder of its input and of
its output, which inside a network happen once at its edges; counting them made every
cut look up to twice as profitable as it was.  On ``openvino`` a layer is timed alone as
a whole call; its fixed per-call cost cancels in the differences.  The base is then profiled whole too, and
the tables are scaled to what its conv and linear kernels take inside it.  Elementwise
layers that follow a pruned conv (BatchNorm in eager torch, PReLU, ...) are timed once at
full width and scaled with their channels; BatchNorm costs nothing on ``ort``, which
folds it into the conv.  Activations and pooling are not
modelled (they stay in the fixed part), so a prediction errs on the slow side.

Tables are cached per process, keyed by the layer's shape, the grid and the runtime.
"""

from __future__ import annotations

import bisect
import copy

import torch
from torch import nn

from ..errors import UserError, unknown_choice
from ..profile import openvino, ort
from ..profile.latency import compare_latency

__all__ = ["RUNTIMES", "LayerTable", "LatencyModel", "measure_tables", "measure_models_ms", "grid"]

RUNTIMES = ("torch", "ort", "openvino")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CACHE: dict = {}


def grid(size: int, step: int, points: int = 8) -> list[int]:
    """Kept channel counts to time for a group of ``size``: about ``points`` even shares,
    each a multiple of ``step`` (the selection's round-to), and ``size`` itself."""
    if size <= 1:
        return [size]
    step = max(1, step if step > 1 else size // points)
    counts = {size}
    for k in range(1, points):
        counts.add(min(size, max(step, int(round(size * k / points / step)) * step)))
    return sorted(counts)


def _interp(xs: list, ys: list, x: float) -> float:
    """Piecewise-linear through (xs, ys), extended linearly past both ends."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + t * (ys[i + 1] - ys[i])


class LayerTable:
    """Milliseconds of one layer for ``ins[i]`` input and ``outs[j]`` output channels kept.

    ``coupled`` (depthwise convs): input and output channels are the same channels, and
    ``ms`` has one row indexed by ``outs``."""

    def __init__(self, ins: list, outs: list, ms: list, coupled: bool = False):
        self.ins, self.outs, self.ms, self.coupled = list(ins), list(outs), [list(r) for r in ms], coupled

    def predict(self, kept_in: float, kept_out: float) -> float:
        if self.coupled:
            return max(0.0, _interp(self.outs, self.ms[0], kept_out))
        rows = [_interp(self.outs, row, kept_out) for row in self.ms]
        return max(0.0, _interp(self.ins, rows, kept_in))

    def to_dict(self) -> dict:
        return {"ins": self.ins, "outs": self.outs, "ms": self.ms, "coupled": self.coupled}


class LatencyModel:
    """A model's measured latency as a function of the channels kept per layer."""

    def __init__(self, base_ms: float, tables: dict, runtime: str, threads: int):
        self.base_ms, self.tables, self.runtime, self.threads = base_ms, tables, runtime, threads

    def layer_ms(self, name: str, kept_in: float | None, kept_out: float | None) -> float:
        """Predicted ms of layer ``name``; None means that side is not pruned (all kept)."""
        table = self.tables.get(name)
        if table is None:
            return 0.0
        return table.predict(table.ins[-1] if kept_in is None else kept_in,
                             table.outs[-1] if kept_out is None else kept_out)


# ------------------------------------------------------------------- timing


def _onnx_layer(module: nn.Module, shape: tuple) -> bytes:
    """A one-node ONNX model of ``module`` (conv or linear) on inputs of ``shape``, built
    directly: exporting through torch would cost 50x the timing itself."""
    import numpy as np  # lazy: with onnx, only to build a layer's graph
    from onnx import TensorProto, helper, numpy_helper

    weight = module.weight.detach().numpy().astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["input", "w"]
    if module.bias is not None:
        inits.append(numpy_helper.from_array(module.bias.detach().numpy().astype(np.float32), "b"))
        inputs.append("b")
    if isinstance(module, nn.Linear):
        node = helper.make_node("Gemm", inputs, ["y"], transB=1)
        out_shape = [shape[0], module.out_features]
    else:
        pads = list(module.padding) * 2 if not isinstance(module.padding, str) else None
        attrs = dict(kernel_shape=list(module.kernel_size), strides=list(module.stride),
                     dilations=list(module.dilation), group=module.groups)
        if pads is None:
            attrs["auto_pad"] = "SAME_UPPER" if module.padding == "same" else "VALID"
        else:
            attrs["pads"] = pads
        node = helper.make_node("Conv", inputs, ["y"], **attrs)
        with torch.no_grad():
            out_shape = list(module(torch.zeros(1, *shape[1:])).shape)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    return model.SerializeToString()


def _layer_ms(modules: dict, shapes: dict, runtime: str, threads: int, repeats: int) -> dict:
    """Batch-1 ms of each layer alone on ``runtime``, timed round-robin (``shapes``: inputs
    without the batch).  Eager torch: the median call.  ONNX Runtime: its profiler's time
    for the layer's kernel, without the session's per-call cost or the layout reorders a
    lone blocked conv needs at its edges, which a network pays once, not per layer."""
    if runtime == "torch":
        return _median_ms({n: m.eval() for n, m in modules.items()}, shapes, threads, repeats)
    if runtime == "openvino":
        timed = {name: openvino.OpenVinoModule(openvino.from_onnx_bytes(_onnx_layer(module, (1, *shapes[name]))),
                                               threads)
                 for name, module in modules.items()}
        return _median_ms(timed, shapes, threads, repeats)
    graphs = {name: _onnx_layer(module, (1, *shapes[name])) for name, module in modules.items()}
    return ort.kernel_ms(graphs, shapes, threads, repeats=repeats)


def _require_ort() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("latency runtime 'ort' needs onnx and onnxruntime (pip install torchslim[export])") from None


def measure_models_ms(models: dict, input_shape, runtime: str, threads: int = 1, repeats: int = 30) -> dict:
    """Median batch-1 latency of each whole model on ``runtime``, timed round-robin in one run."""
    if runtime == "openvino":
        graphs = {name: ort.export_onnx_bytes(model, tuple(input_shape)) for name, model in models.items()}
        timed = {name: openvino.OpenVinoModule(openvino.from_onnx_bytes(graph), threads)
                 for name, graph in graphs.items()}
        return _median_ms(timed, {name: tuple(input_shape) for name in timed}, threads, repeats)
    timed = {name: copy.deepcopy(model).eval() if runtime == "torch"
             else ort.OrtModule(ort.export_onnx_bytes(model, tuple(input_shape)), threads)
             for name, model in models.items()}
    return _median_ms(timed, {name: tuple(input_shape) for name in timed}, threads, repeats)


def _median_ms(modules: dict, shapes: dict, threads: int, repeats: int) -> dict:
    """Median batch-1 ms of each module on its own input shape, timed round-robin."""
    timing = compare_latency(modules, shapes, threads=threads, warmup=2, repeats=repeats)
    return {name: timing[name]["median_ms"] for name in modules}


def _resized(module: nn.Module, in_dim: int, out_dim: int) -> nn.Module:
    if isinstance(module, nn.Linear):
        return nn.Linear(in_dim, out_dim, bias=module.bias is not None)
    groups = module.groups
    if groups > 1:  # depthwise: the groups follow the channels
        groups = in_dim
    return type(module)(in_dim, out_dim, module.kernel_size, module.stride, module.padding, module.dilation,
                        groups, bias=module.bias is not None, padding_mode=module.padding_mode)


def _elementwise_ms(module: nn.Module, shape: tuple, runtime: str, threads: int, repeats: int) -> float:
    if runtime in ("ort", "openvino") and isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 0.0  # folded into the conv before it
    return _layer_ms({"m": copy.deepcopy(module)}, {"m": shape[1:]}, "torch", threads, repeats)["m"]


def _layer_table(module, shape, size_in, size_out, step, runtime, threads, repeats) -> LayerTable:
    """Time ``module`` (input ``shape``) over the grid of kept channel counts."""
    full_in = shape[-1] if isinstance(module, nn.Linear) else shape[1]
    full_out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    grouped = isinstance(module, _CONVS) and module.groups > 1
    coupled = grouped and module.groups == module.in_channels and size_in is None
    if grouped and not coupled:  # timed at full width only; scaled with the MACs
        full = _layer_ms({"m": copy.deepcopy(module)}, {"m": shape[1:]}, runtime, threads, repeats)["m"]
        si, so = size_in or 1, size_out or 1
        return LayerTable([0, si], [0, so], [[0.0, 0.0], [0.0, full]])
    ins = grid(size_in, step) if size_in and not coupled else [size_in or 1]
    outs = grid(size_out, step) if size_out else [size_out or 1]
    key = (runtime, threads, repr(module), tuple(shape), tuple(ins), tuple(outs), coupled)
    if key in _CACHE:
        return _CACHE[key]
    points = [(o, o) for o in outs] if coupled else [(i, o) for i in ins for o in outs]
    modules, shapes = {}, {}
    for index, (kept_in, kept_out) in enumerate(points):
        in_dim = max(1, round(full_in * kept_in / (size_in or 1))) if size_in else full_in
        out_dim = max(1, round(full_out * kept_out / (size_out or 1))) if size_out else full_out
        if coupled:
            in_dim = out_dim * module.in_channels // module.out_channels
        layer_shape = (shape[0], *shape[1:-1], in_dim) if isinstance(module, nn.Linear) else (shape[0], in_dim,
                                                                                              *shape[2:])
        modules[index] = _resized(module, in_dim, out_dim)
        shapes[index] = layer_shape[1:]
    medians = _layer_ms(modules, shapes, runtime, threads, repeats)
    times = [medians[i] for i in range(len(points))]
    ms = [times] if coupled else [times[r * len(outs):(r + 1) * len(outs)] for r in range(len(ins))]
    table = LayerTable(ins if not coupled else outs, outs, ms, coupled)
    _CACHE[key] = table
    return table


def measure_tables(model: nn.Module, example: torch.Tensor, sizes: dict, names, runtime: str = "torch",
                   threads: int = 1, step: int = 1, repeats: int = 15) -> LatencyModel:
    """Latency tables for the layers ``names`` of ``model`` (at batch 1).

    ``sizes[(name, "in" | "out")]`` is the number of prunable channel positions on that
    side of the layer (absent: that side is not pruned)."""
    if runtime not in RUNTIMES:
        raise unknown_choice("latency runtime", runtime, RUNTIMES)
    if runtime == "ort":
        _require_ort()
    if runtime == "openvino":
        openvino.require("latency runtime 'openvino'")
        _require_ort()  # the layers reach OpenVINO as ONNX graphs
    shapes = {}
    modules = {name: model.get_submodule(name) for name in names}
    # every conv and linear layer's input shape: ONNX Runtime's tables are scaled to the network
    computing = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, *_CONVS))}

    def record(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: the inputs are left alone
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in {**computing, **modules}.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    tables = {}
    for name, module in modules.items():
        if name not in shapes:
            continue
        size_in, size_out = sizes.get((name, "in")), sizes.get((name, "out"))
        if isinstance(module, (nn.Linear, *_CONVS)):
            tables[name] = _layer_table(module, shapes[name], size_in, size_out, step, runtime, threads, repeats)
        elif size_out:  # elementwise per channel: scales with the channels kept
            full = _elementwise_ms(module, shapes[name], runtime, threads, repeats)
            tables[name] = LayerTable([size_in or 1], [0, size_out], [[0.0, full]])
    if runtime == "ort":
        base_ms, tables = _in_network(model, example, tables, computing, shapes, threads, repeats)
    else:
        base_ms = measure_models_ms({"m": model}, tuple(example.shape[1:]), runtime, threads, max(repeats, 30))["m"]
    return LatencyModel(base_ms, tables, runtime, threads)


# ONNX Runtime ops that do a conv or linear layer's arithmetic (possibly fused with more)
_COMPUTE_OPS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def _in_network(model, example, tables, computing, shapes, threads, repeats) -> tuple:
    """ONNX Runtime: the whole model profiled node by node, and the layer tables scaled so
    that, at full width, the conv and linear layers timed alone add up to what their
    kernels take inside the network (about 1.2-1.5x more on vgg14: colder caches).

    Returns the base's time in the profiler's units (every node, reorders included; with
    the profiler's own cost it can run up to 30% over a plain call, so only shares of it
    are used) and the scaled tables."""
    shape = tuple(example.shape[1:])
    nodes = ort.profile_nodes({"m": ort.export_onnx_bytes(model, shape)}, {"m": shape}, threads,
                          repeats=max(repeats, 30))["m"]
    base_ms = sum(ms for _, ms in nodes.values())
    in_network = sum(ms for op, ms in nodes.values() if op in _COMPUTE_OPS)
    untabled = {name: m for name, m in computing.items() if name not in tables and name in shapes}
    alone = _layer_ms(untabled, {name: shapes[name][1:] for name in untabled}, "ort", threads, repeats) \
        if untabled else {}
    alone_total = sum(alone.values()) + sum(t.predict(t.ins[-1], t.outs[-1]) for name, t in tables.items()
                                            if name in computing)
    scale = in_network / alone_total if alone_total > 0 and in_network > 0 else 1.0
    scaled = {name: LayerTable(t.ins, t.outs, [[v * scale for v in row] for row in t.ms], t.coupled)
              if name in computing else t for name, t in tables.items()}
    return base_ms, scaled
