"""OpenVINO as a timing runtime: a compiled OpenVINO model behind ``nn.Module.__call__``.

The optional extra (``pip install 'torchslim[openvino]'``) is imported only inside the calls;
:func:`require` fails in one line naming it.  Converting and exporting a torch model is
:mod:`torchslim.export.openvino`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UserError

EXTRA = "pip install 'torchslim[openvino]'"


def available() -> bool:
    try:
        import nncf  # noqa: F401  (optional dependency)
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def require(what: str) -> None:
    """A one-line user error naming the extra when OpenVINO or NNCF is missing."""
    if not available():
        raise UserError(f"{what} needs OpenVINO and NNCF, which are not installed; install the extra: {EXTRA}")


def from_onnx_bytes(data: bytes):
    """An ``openvino.Model`` read from an ONNX graph in memory (milliseconds, where converting
    a torch module takes most of a second: the per-layer latency tables read thousands)."""
    import openvino as ov  # optional dependency

    return ov.Core().read_model(data, ov.Tensor(type=ov.Type.u8, shape=[0]))


def compile_model(ov_model, threads: int = 1):
    """Compiled for the CPU at batch-1 latency: ``threads`` inference threads, one stream, no
    pinning (other runtimes share the cores in a benchmark), f32 for what is not int8."""
    import openvino as ov  # optional dependency

    config = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
    return ov.Core().compile_model(ov_model, "CPU", config)


def kernel_names(compiled) -> list[str]:
    """The CPU plugin's implementations of the convolutions and matrix products (its ISA path,
    e.g. ``brgconv_avx512_I8``), as its runtime model records them."""
    found = set()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected", "MatMul"):
            found.add(info["primitiveType"].astype(str))
    return sorted(found)


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model behind ``nn.Module.__call__``, so it times like the others.

    The IR has a static batch of 1 (the fastest plan for batch-1 latency); another batch size
    compiles a reshaped copy once, on first use."""

    def __init__(self, ov_model, threads: int = 1):
        super().__init__()
        self.ov_model, self.threads = ov_model, int(threads)
        self.compiled = compile_model(ov_model, threads)
        self.requests = {1: self.compiled.create_infer_request()}
        self.isa = kernel_names(self.compiled)

    def _request(self, batch: int):
        if batch not in self.requests:
            reshaped = self.ov_model.clone()
            shape = list(reshaped.inputs[0].get_partial_shape().to_shape())
            reshaped.reshape([batch, *shape[1:]])
            self.requests[batch] = compile_model(reshaped, self.threads).create_infer_request()
        return self.requests[batch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        request = self._request(len(x))
        return torch.from_numpy(request.infer([np.ascontiguousarray(x.numpy())])[0].copy())
