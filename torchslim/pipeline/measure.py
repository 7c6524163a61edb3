"""What a recipe's report shows about a model: accuracy, size, MACs, latency, channels."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..deploy.modules import PackedBinaryConv2d
from ..errors import UserError
from ..quant.modules import has_quantized_weights


def is_quantized(model: nn.Module) -> bool:
    return has_quantized_weights(model)


def weight_count(model: nn.Module) -> int:
    """Parameters of the network's float equivalent: quantized codes and codebook indices count as weights."""
    from ..export.onnx import float_copy  # lazy: heavy: loads when a run needs it
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
    from ..export.onnx import float_copy  # lazy: heavy: loads when a run needs it

    return float_twin(float_copy(model))


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


def latency_rows(models: dict, input_shape, calibration: torch.Tensor, threads: int = 1,
                 repeats: int = 20) -> dict:
    """Batch-1 medians (ms) for each model as float, ONNX Runtime int8 and packed binary where that applies.

    Every contender is timed in one run, in interleaved turns, so the ratios between rows
    hold even on a busy machine.  Returns ``{name: {"float": ms, "int8": ms or None, "binary": ms or None}}``.
    """
    from ..profile import ort  # lazy: heavy: loads when a run needs it
    from ..deploy.bench import compare_blocks  # lazy: heavy: loads when a run needs it

    if ort.available():
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # no per-initializer warnings in the user's terminal
    contenders = {}
    for name, model in models.items():
        model.eval()
        if is_quantized(model):
            contenders.update(_binary_contenders(model, f"{name}/"))
            float_model = contenders[f"{name}/float"]
        else:
            float_model = contenders[f"{name}/float"] = float_version(model)
        if ort.available():
            try:
                onnx_bytes = ort.export_onnx_bytes(float_model, input_shape)
                contenders[f"{name}/int8"] = ort.OrtModule(ort.quantize_int8(onnx_bytes, calibration), threads)
            except Exception as exc:  # an op ONNX Runtime cannot quantize: report no int8 figure
                print(f"note: no int8 timing for {name} ({str(exc).splitlines()[0][:120]})")
    # runtimes with threads of their own: turns of consecutive calls after a pause (deploy.bench)
    timing = compare_blocks(contenders, input_shape, 1, threads, repeats=repeats)
    rows = {}
    for name in models:
        rows[name] = {kind: (timing[f"{name}/{kind}"]["median_ms"] if f"{name}/{kind}" in timing else None)
                      for kind in ("float", "int8", "binary")}
    return rows


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
