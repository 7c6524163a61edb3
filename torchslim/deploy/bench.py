"""Side-by-side timing of one network: float (eager, ONNX Runtime and OpenVINO), int8
(ONNX Runtime static QDQ, OpenVINO with NNCF post-training quantization) and the compiled
binary model, interleaved in one run so the ratios are fair on a
noisy machine.  Also times every packed layer against a float conv of the same shape.

The runtimes are interleaved in blocks, not call by call: each keeps threads of its
own (ONNX Runtime's spin after a run, the packed kernels' pool spins briefly, torch's
OpenMP threads spin too), and with single alternations those threads would hold a
core the next runtime needs.  A block starts after a pause longer than any of those
spins and 30 ms of untimed calls (after the pause an idle core runs slower at first:
a 0.23 ms binary layer took 0.46 ms right after it), then times consecutive calls, as
a deployed model runs.
torch's OpenMP workers were measured here still spinning 10-20 ms after a parallel
region: with a 5 ms pause, a 2-thread binary layer timed right after a 2-thread torch
conv ran no faster than on 1 thread (0.33 ms both), with 30-50 ms it took 0.21 ms.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..codebook.modules import PQConv2d, PQLinear
from ..export import openvino as ov_runtime
from ..nn import float_copy, set_submodule
from ..profile import ort
from ..profile.latency import compare_latency
from ..quant import freeze
from ..quant.modules import ActQuant
from .build import isa
from .compile import compile as compile_binary
from .compile import memory_report
from .lut import PQLookupConv2d, use_lookup_tables
from .modules import PackedBinaryConv2d


def float_twin(model: nn.Module) -> nn.Module:
    """The same network in plain float layers: a quantization-aware model frozen, every compressed
    layer as its float equivalent (:func:`torchslim.nn.float_copy`), activation quantizers as ReLU."""
    twin = float_copy(freeze(model))
    for name, module in list(twin.named_modules()):
        if isinstance(module, ActQuant):
            set_submodule(twin, name, nn.ReLU())
    return twin


def compare_blocks(models: dict, input_shape, batch_size: int = 1, threads: int | None = None, repeats: int = 30,
                   block: int = 5, pause_s: float = 0.05, warm_s: float = 0.03) -> dict:
    """Block-interleaved medians: ``{name: {"median_ms", "p10_ms", "p90_ms"}}`` (see the module doc).

    Rounds of: for each model, sleep ``pause_s`` (other runtimes' spinning threads go
    idle), untimed calls for ``warm_s`` (at least one: cores idle for the pause run
    slower at first), then ``block`` timed calls; until ``repeats`` samples each.
    """
    timing = compare_latency(models, input_shape, batch_size, threads, warmup=3, repeats=repeats, block=block,
                             pause_s=pause_s, warm_s=warm_s)
    return {name: timing[name] for name in models}


def _layer_inputs(model: nn.Module, input_shape) -> dict:
    shapes = {}

    def record(name):
        def hook(module, args, _output):
            x = args[0]  # a chained layer's input is packed: [N, P, H, W, words]
            shape = (module.in_channels, x.shape[-3], x.shape[-2]) if module.packed_input else tuple(x.shape[1:])
            shapes.setdefault(name, shape)
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, PackedBinaryConv2d)]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return shapes


def _layer_rows(binary: nn.Module, input_shape, threads: int, repeats: int) -> list[dict]:
    rows = []
    modules = dict(binary.named_modules())
    for module in modules.values():
        if isinstance(module, PackedBinaryConv2d):
            module.threads = threads
    for name, shape in _layer_inputs(binary, input_shape).items():
        chained = modules[name]  # timed alone: float in, float out
        packed = PackedBinaryConv2d.from_codes(chained.codes(), chained.scale, chained.bias, chained.stride,
                                               chained.padding, chained.levels)
        packed.threads = threads
        conv = nn.Conv2d(packed.in_channels, packed.out_channels, packed.kernel_size, packed.stride, packed.padding)
        timing = compare_blocks({"float": conv, "binary": packed}, shape, 1, threads, repeats=repeats)
        mode = "1-bit" if packed.thresholds is None else f"{packed.thresholds.numel().bit_length()}-bit act"
        if packed.thresholds is not None:
            mode += f" ({packed.steps.numel()} {'binary' if packed.binary else 'therm.'} planes)"
        rows.append({"layer": name, "input": list(shape), "mode": mode, "float_ms": timing["float"]["median_ms"],
                     "binary_ms": timing["binary"]["median_ms"],
                     "speedup": timing["float"]["median_ms"] / timing["binary"]["median_ms"]})
    return rows


def _timed_runs(contenders, input_shape, batches, threads, repeats: int) -> list[dict]:
    """One row of medians (``{name}_ms``) per thread count and batch; ``contenders(threads)`` gives the models."""
    runs = []
    for thread_count in threads:
        for batch in batches:
            models = contenders(thread_count)
            timing = compare_blocks(models, input_shape, batch, thread_count, repeats=repeats)
            row = {"batch": batch, "threads": thread_count}
            row.update({f"{k}_ms": timing[k]["median_ms"] for k in models})
            runs.append(row)
    return runs


def bench_model(model: nn.Module, input_shape, batches=(1,), threads=(1,), repeats: int = 30,
                calibration: torch.Tensor | None = None, per_layer: bool = True, openvino: bool | None = None) -> dict:
    """Time float (eager, ONNX Runtime, OpenVINO) / int8 (ONNX Runtime, OpenVINO + NNCF) / binary
    for each batch and thread count; each runtime found installed is timed, the rest left out
    (``openvino``: None = when installed, True = required, False = never)."""
    twin = float_twin(model)
    binary = compile_binary(model)
    calibration = calibration if calibration is not None else torch.randn(16, *input_shape)
    if openvino:
        ov_runtime.require("timing on OpenVINO")
    use_ort, use_ov = ort.available(), ov_runtime.available() and openvino is not False
    if use_ort:
        float_bytes = ort.export_onnx_bytes(twin, input_shape)
        int8_bytes = ort.quantize_qdq(float_bytes, calibration)
    if use_ov:
        ov_models = ov_runtime.runtime_pair(twin, input_shape, calibration)
    paths = {"binary": isa()}

    def contenders(thread_count):
        for m in binary.modules():
            if isinstance(m, PackedBinaryConv2d):
                m.threads = thread_count
        found = {"float_eager": twin, "binary": binary}
        if use_ort:
            found["float_ort"] = ort.OrtModule(float_bytes, thread_count)
            found["int8_ort"] = ort.OrtModule(int8_bytes, thread_count)
        if use_ov:
            found["float_openvino"] = ov_runtime.OpenVinoModule(ov_models[0], thread_count)
            found["int8_openvino"] = ov_runtime.OpenVinoModule(ov_models[1], thread_count)
            paths.update({k: ", ".join(found[k].isa) for k in ("float_openvino", "int8_openvino")})
        return found

    runs = _timed_runs(contenders, input_shape, batches, threads, repeats)
    first = runs[0]
    float_ms = first.get("float_ort_ms", first["float_eager_ms"])
    int8_best = min((first[k] for k in ("int8_ort_ms", "int8_openvino_ms") if k in first), default=None)
    result = {
        "float_ms": float_ms, "float_eager_ms": first["float_eager_ms"], "float_ort_ms": first.get("float_ort_ms"),
        "float_openvino_ms": first.get("float_openvino_ms"), "int8_openvino_ms": first.get("int8_openvino_ms"),
        "binary_ms": first["binary_ms"], "int8_ms": first.get("int8_ort_ms"),
        "speedup_binary": float_ms / first["binary_ms"],
        "speedup_int8": (float_ms / first["int8_ort_ms"]) if use_ort else None,
        "binary_vs_int8": (first["int8_ort_ms"] / first["binary_ms"]) if use_ort else None,
        "binary_vs_best_int8": int8_best / first["binary_ms"] if int8_best else None,
        "isa_paths": paths, "runs": runs, "memory": memory_report(binary),
        "layers": _layer_rows(binary, input_shape, threads[0], repeats) if per_layer else [],
    }
    return result


def has_product_codebooks(model: nn.Module) -> bool:
    return any(isinstance(m, (PQConv2d, PQLinear)) for m in model.modules())


def bench_lookup_model(model: nn.Module, input_shape, batches=(1,), threads=(1,), repeats: int = 30) -> dict:
    """Time a product-quantized model's decoded float network (eager torch, ONNX Runtime float32)
    against the same model on lookup tables (:func:`torchslim.deploy.lut.use_lookup_tables`)."""
    dense = float_copy(model)
    lookup = copy.deepcopy(model).eval()
    swapped = use_lookup_tables(lookup)
    modules = dict(lookup.named_modules())
    native = [p for p in swapped if getattr(modules[p], "native", False)]
    use_ort = ort.available()
    float_bytes = ort.export_onnx_bytes(dense, input_shape) if use_ort else None
    def contenders(thread_count):
        found = {"float_eager": dense, "lookup": lookup}
        if use_ort:
            found["float_ort"] = ort.OrtModule(float_bytes, thread_count)
        return found

    runs = _timed_runs(contenders, input_shape, batches, threads, repeats)
    first = runs[0]
    float_ms = first.get("float_ort_ms", first["float_eager_ms"])
    return {"float_ms": float_ms, "float_eager_ms": first["float_eager_ms"], "float_ort_ms": first.get("float_ort_ms"),
            "lookup_ms": first["lookup_ms"], "speedup_lookup": float_ms / first["lookup_ms"], "runs": runs,
            "lookup_layers": swapped, "native_layers": native,
            "decoded_layers": [p for p in swapped if p not in native and isinstance(modules[p], PQLookupConv2d)]}
