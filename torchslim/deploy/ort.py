"""ONNX Runtime baselines for ``torchslim bench``: float32 and static int8 (QDQ, per-channel).

A binary network only matters if it beats the fastest runtime a user would pick,
so the float and int8 rows come from ONNX Runtime when it is installed.
"""

from __future__ import annotations

import io
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


def _session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def quantize_int8(float_bytes: bytes, calibration: torch.Tensor) -> bytes:
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
