"""Post-training static int8 quantization with calibration, for CPU deployment.

Two back-ends, both per-channel symmetric int8 weights and per-tensor affine uint8/int8
activations calibrated on real images:

* ``"onnxruntime"``: export to ONNX, then ONNX Runtime's ``quantize_static`` in QDQ
  format; the result is an ``.onnx`` file run by :class:`OnnxModel`.  On this x86 CPU
  without VNNI it is the faster of the two (see BENCHMARKS.md), so it is the default.
* ``"torch"``: PyTorch FX graph mode with the ``x86`` backend (``prepare_fx`` /
  ``convert_fx``); the result is an in-memory ``GraphModule``.
"""

from __future__ import annotations

import copy
import os
import tempfile

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_path

__all__ = ["BACKENDS", "OnnxModel", "export_dynamic_batch_onnx", "quantize_int8_onnx", "quantize_int8_torch",
           "quantize_int8"]

BACKENDS = ("onnxruntime", "torch")


def export_dynamic_batch_onnx(model: nn.Module, path, input_shape) -> str:
    """Float ONNX export with a dynamic batch dimension (atomic write)."""
    model = copy.deepcopy(model).eval().cpu()
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), tmp, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    return os.fspath(path)


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind an ``nn.Module`` interface (CPU, float tensors in and out)."""

    def __init__(self, path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = os.fspath(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


class _Reader:
    """``CalibrationDataReader`` over a list of batches."""

    def __init__(self, batches, input_name):
        self.items = iter([{input_name: b.cpu().numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self.items, None)


def quantize_int8_onnx(model: nn.Module, batches, path, input_shape, per_channel: bool = True) -> str:
    """Static QDQ int8 ONNX model of ``model`` calibrated on ``batches``, written to ``path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        float_path = export_dynamic_batch_onnx(model, os.path.join(folder, "float.onnx"), input_shape)
        prepared = os.path.join(folder, "prepared.onnx")
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        with atomic_path(path) as tmp:
            quantize_static(prepared, tmp, _Reader(batches, "input"), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return os.fspath(path)


@torch.no_grad()
def quantize_int8_torch(model: nn.Module, batches, input_shape) -> nn.Module:
    """PyTorch FX static int8 (x86 backend) of ``model`` calibrated on ``batches``."""
    from torch.ao.quantization import get_default_qconfig_mapping  # lazy: torch.ao loads only for eager int8
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # lazy: torch.ao loads only for eager int8

    torch.backends.quantized.engine = "x86"
    float_model = copy.deepcopy(model).eval().cpu()
    example = (torch.zeros(1, *input_shape),)
    try:
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), example)
    except Exception as exc:  # noqa: BLE001  (fx raises many types)
        raise UserError(f"cannot prepare {type(model).__name__} for PyTorch int8: {str(exc).splitlines()[0]}") \
            from None
    for batch in batches:
        prepared(batch.cpu())
    return convert_fx(prepared)


def quantize_int8(model: nn.Module, batches, input_shape, backend: str = "onnxruntime", path=None):
    """Static int8 model: an :class:`OnnxModel` (written to ``path``) or a PyTorch ``GraphModule``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown int8 backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    if backend == "torch":
        return quantize_int8_torch(model, batches, input_shape)
    if path is None:
        raise UserError("the onnxruntime int8 backend writes a file: give a path ending in .onnx")
    return OnnxModel(quantize_int8_onnx(model, batches, path, input_shape))
