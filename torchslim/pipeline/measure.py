"""What a recipe's report shows about a model: accuracy, size, MACs, latency, channels."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..deploy.modules import PackedBinaryConv2d
from ..errors import UserError
from ..nn import float_copy
from ..quant.modules import has_quantized_weights
from ..report.format import RUNTIMES


def is_quantized(model: nn.Module) -> bool:
    return has_quantized_weights(model)


def weight_count(model: nn.Module) -> int:
    """Parameters of the network's float equivalent: quantized codes and codebook indices count as weights."""
    from ..profile import count_params  # lazy: heavy: loads when a run needs it

    return count_params(float_copy(model))


def model_metrics(path: str, test_set) -> dict:
    """top-1 on ``test_set``, params, MACs and bytes on disk of a saved model."""
    from .. import load  # lazy: heavy: loads when a run needs it
    from ..profile import count_macs  # lazy: heavy: loads when a run needs it
    from ..train import evaluate  # lazy: heavy: loads when a run needs it

    model = load(path)
    shape = tuple(model.input_shape)
    return {"top1": evaluate(model, test_set)["top1"], "params": weight_count(model),
            "macs": count_macs(model, shape), "size_bytes": os.path.getsize(path)}


def float_version(model: nn.Module) -> nn.Module:
    """The same architecture in plain float layers: what the float row of the table times."""
    from ..deploy.bench import float_twin  # lazy: heavy: loads when a run needs it

    return float_twin(model)


def _binary_contenders(model: nn.Module, prefix: str) -> dict:
    from ..deploy.compile import compile as compile_binary  # lazy: heavy: loads when a run needs it

    contenders = {f"{prefix}float": float_version(model)}
    try:
        compiled = compile_binary(model, threads=1)
    except UserError:
        return contenders
    if any(isinstance(m, PackedBinaryConv2d) for m in compiled.modules()):  # PackedBinaryLinear is one too
        contenders[f"{prefix}binary"] = compiled
    return contenders


def _int8_contenders(name: str, float_model: nn.Module, input_shape, calibration: torch.Tensor, threads: int,
                     openvino: bool) -> dict:
    """The float network on ONNX Runtime int8 (static QDQ) and, with ``openvino``, OpenVINO int8 (NNCF)."""
    from ..profile import openvino as ov  # lazy: heavy: loads when a run needs it
    from ..profile import ort  # lazy: heavy: loads when a run needs it

    found = {}
    if ort.available():
        try:
            onnx_bytes = ort.export_onnx_bytes(float_model, input_shape)
            found[f"{name}/int8"] = ort.OrtModule(ort.quantize_qdq(onnx_bytes, calibration), threads)
        except Exception as exc:  # an op ONNX Runtime cannot quantize: report no int8 figure
            print(f"note: no ONNX Runtime int8 timing for {name} ({str(exc).splitlines()[0][:120]})")
    if openvino:
        from ..export.openvino import runtime_pair  # lazy: the optional extra loads only here

        try:
            found[f"{name}/openvino_int8"] = ov.OpenVinoModule(runtime_pair(float_model, input_shape,
                                                                            calibration)[1], threads)
        except Exception as exc:  # a graph OpenVINO or NNCF cannot take: report no figure
            print(f"note: no OpenVINO int8 timing for {name} ({str(exc).splitlines()[0][:120]})")
    return found


def measure_latency(models: dict, input_shape, calibration: torch.Tensor, threads: int = 1, repeats: int = 20,
                    openvino: bool | None = False) -> tuple[dict, dict]:
    """Batch-1 medians (ms) of each model on each runtime, and what each runtime column ran.

    Every model is timed as eager torch fp32 (its float network), ONNX Runtime int8 and, with
    ``openvino`` (None: when installed), OpenVINO int8 of that float network, and on our
    compiled binary kernels where it has binary layers.  All contenders run in one session, in
    interleaved turns, so the ratios between rows hold even on a busy machine.  Returns
    ``({name: {runtime key: ms or None}}, {runtime key: "name (version, ISA path)"})`` with the
    keys of :data:`RUNTIMES` (``openvino_int8`` only when OpenVINO was timed).
    """
    from ..deploy.bench import compare_blocks  # lazy: heavy: loads when a run needs it
    from ..profile import openvino as ov  # lazy: heavy: loads when a run needs it
    from ..profile import ort  # lazy: heavy: loads when a run needs it

    if ort.available():
        import onnxruntime  # optional dependency

        onnxruntime.set_default_logger_severity(3)  # no per-initializer warnings in the user's terminal
    openvino = ov.available() if openvino is None else openvino
    contenders = {}
    for name, model in models.items():
        model.eval()
        if is_quantized(model):
            contenders.update(_binary_contenders(model, f"{name}/"))
            float_model = contenders[f"{name}/float"]
        else:
            float_model = contenders[f"{name}/float"] = float_version(model)
        contenders.update(_int8_contenders(name, float_model, input_shape, calibration, threads, openvino))
    # runtimes with threads of their own: turns of consecutive calls after a pause (deploy.bench)
    timing = compare_blocks(contenders, input_shape, 1, threads, repeats=repeats)
    kinds = [k for k in RUNTIMES if k != "openvino_int8" or openvino]
    rows = {name: {kind: (timing[f"{name}/{kind}"]["median_ms"] if f"{name}/{kind}" in timing else None)
                   for kind in kinds} for name in models}
    return rows, runtime_names(contenders, openvino)


def runtime_names(contenders: dict, openvino: bool) -> dict:
    """Each runtime column's name with its version and the instruction-set path it ran."""
    from ..deploy.build import isa  # lazy: heavy: loads when a run needs it

    names = {"float": f"{RUNTIMES['float']} (torch {torch.__version__})"}
    try:
        import onnxruntime  # optional dependency

        names["int8"] = f"{RUNTIMES['int8']} (onnxruntime {onnxruntime.__version__}, static QDQ per-channel)"
    except ImportError:
        names["int8"] = f"{RUNTIMES['int8']} (not installed)"
    if openvino:
        import openvino as ov_package  # optional dependency

        kernels = sorted({k for name, m in contenders.items() if name.endswith("/openvino_int8") for k in m.isa})
        names["openvino_int8"] = (f"{RUNTIMES['openvino_int8']} (openvino {ov_package.__version__.split('-')[0]}, "
                                  f"NNCF; kernels {', '.join(kernels) or '?'})")
    names["binary"] = f"{RUNTIMES['binary']} (compiled, {isa()} path)"
    return names


def latency_rows(models: dict, input_shape, calibration: torch.Tensor, threads: int = 1,
                 repeats: int = 20) -> dict:
    """The rows of :func:`measure_latency` on eager torch, ONNX Runtime int8 and binary kernels:
    ``{name: {"float": ms, "int8": ms or None, "binary": ms or None}}``."""
    return measure_latency(models, input_shape, calibration, threads, repeats, openvino=False)[0]


def channels_kept(original: nn.Module, final: nn.Module) -> list[dict]:
    """Output channels of every conv / linear layer before and after, in network order.

    Only layers present under the same name in both models are listed (a distilled
    student, a different network, has none in common).
    """
    after = dict(final.named_modules())
    rows = []
    for name, module in original.named_modules():
        other = after.get(name)
        before_channels = _out_channels(module)
        if before_channels is None or other is None or _out_channels(other) is None:
            continue
        rows.append({"layer": name, "before": before_channels, "after": _out_channels(other)})
    return rows


def _out_channels(module: nn.Module) -> int | None:
    for attr in ("out_channels", "out_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(module, nn.BatchNorm2d):
            return value
    return None
