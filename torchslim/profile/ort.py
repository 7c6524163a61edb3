"""ONNX Runtime baselines for ``torchslim bench``: float32 and static int8 (QDQ, per-channel).

A binary network only matters if it beats the fastest runtime a user would pick,
so the float and int8 rows come from ONNX Runtime when it is installed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings

import numpy as np
import torch
from torch import nn


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def export_onnx_bytes(model: nn.Module, input_shape) -> bytes:
    """The float model as ONNX (opset 17, legacy exporter: no extra dependencies)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, *input_shape),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def _session(model_bytes: bytes, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


# Layout changes ONNX Runtime adds around its blocked (NCHWc) kernels.  A model timed
# node by node leaves them out: inside a network they happen once, at its edges.
LAYOUT_OPS = ("ReorderInput", "ReorderOutput")


def profile_nodes(models: dict, shapes: dict, threads: int = 1, warmup: int = 3, repeats: int = 30,
                  block: int = 5) -> dict:
    """Per model, ``{node: (op type, ms)}`` as ONNX Runtime's own profiler records its
    kernels: per node, the mean of the middle 80% of ``repeats`` runs (the profiler counts
    whole microseconds; a mean over runs resolves finer).

    ``models`` are ONNX bytes with an input named "input" of shape ``(1, *shapes[name])``.
    They run in turns of ``block`` calls each, so a small layer's weights stay in cache as
    they would inside a network, while a slow spell of the machine spreads over all models."""
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: _session(data, threads, os.path.join(folder, f"m{index}"))
                    for index, (name, data) in enumerate(models.items())}
        feeds = {name: {"input": np.random.randn(1, *shapes[name]).astype(np.float32)} for name in models}
        for start in range(0, repeats, block):
            for name, session in sessions.items():
                for _ in range((warmup if start == 0 else 0) + min(block, repeats - start)):
                    session.run(None, feeds[name])
        result = {}
        for name, session in sessions.items():
            with open(session.end_profiling()) as handle:
                events = json.load(handle)
            per_node: dict = {}
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    node = event["name"][: -len("_kernel_time")]
                    per_node.setdefault(node, (event.get("args", {}).get("op_name"), []))[1].append(event["dur"])
            # events come in run order: the last ``repeats`` of each node are the timed runs
            result[name] = {node: (op, _middle_mean(durations[-repeats:]) / 1000.0)
                            for node, (op, durations) in per_node.items()}
    return result


def kernel_ms(models: dict, shapes: dict, threads: int = 1, repeats: int = 30, skip: tuple = LAYOUT_OPS) -> dict:
    """Milliseconds of each model's kernels (:func:`profile_nodes`), summed over the nodes
    whose op is not in ``skip``: the session's per-call cost is left out, and by default the
    layout reorders too, so one layer timed alone costs what it costs inside a network."""
    nodes = profile_nodes(models, shapes, threads, repeats=repeats)
    return {name: sum(ms for op, ms in per_node.values() if op not in skip) for name, per_node in nodes.items()}


def _middle_mean(values: list) -> float:
    values = sorted(values)
    cut = len(values) // 10
    kept = values[cut:len(values) - cut] or values
    return sum(kept) / len(kept)


def quantize_qdq(float_bytes: bytes, calibration: torch.Tensor) -> bytes:
    """Static int8 QDQ quantization, per-channel weights, calibrated on ``calibration`` (N, C, H, W)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calibration[i:i + 1].numpy()} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # the quantizer logs advice through the root logger
    try:
        return _quantize_files(float_bytes, Reader(), quantize_static, QuantFormat, QuantType)
    finally:
        root_logger.setLevel(level)


def _quantize_files(float_bytes, reader, quantize_static, QuantFormat, QuantType) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        source, target = os.path.join(folder, "f.onnx"), os.path.join(folder, "q.onnx")
        with open(source, "wb") as handle:
            handle.write(float_bytes)
        quantize_static(source, target, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        with open(target, "rb") as handle:
            return handle.read()


class OrtModule(nn.Module):
    """An ONNX Runtime session behind ``nn.Module.__call__``, so it times like the others."""

    def __init__(self, model_bytes: bytes, threads: int = 1):
        super().__init__()
        self.session = _session(model_bytes, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {"input": np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(out)
