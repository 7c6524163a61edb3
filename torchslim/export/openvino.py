"""OpenVINO as a runtime: the float network as OpenVINO IR, fp32 or int8 (NNCF post-training
quantization), compiled for the CPU, timed like any module, and written as IR files.

OpenVINO with NNCF's int8 is the int8 a user gets in five minutes on x86 (VNNI/AMX
kernels where the CPU has them), so it is the baseline the binary kernels must beat.
Both packages are an optional extra (``pip install 'torchslim[openvino]'``); every entry
point calls :func:`require` first, which fails in one line naming the extra.

Compressed layers are replaced by their float equivalents first (:func:`float_copy`),
as for ONNX.  The CPU plugin is asked for f32 inference precision: on CPUs with bf16 it
would otherwise run float layers in bf16, and the fp32 row would not be fp32.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile

import torch
from torch import nn

from ..errors import UserError
# The runtime half lives in profile (the pruning latency tables time OpenVINO too); re-exported here.
from ..profile.openvino import EXTRA, OpenVinoModule, available, compile_model, from_onnx_bytes  # noqa: F401
from ..profile.openvino import kernel_names, require  # noqa: F401
from .onnx import float_copy


def convert(model: nn.Module, input_shape) -> "object":
    """The float network as an ``openvino.Model`` with a static batch-1 input of ``input_shape``."""
    import openvino as ov  # optional dependency

    dense = float_copy(model)
    shape = [1, *input_shape]
    with torch.no_grad():
        return ov.convert_model(dense, example_input=torch.zeros(shape), input=[shape])


def quantize_nncf(ov_model, calibration: torch.Tensor, subset_size: int = 300):
    """NNCF post-training int8 quantization of ``ov_model`` on ``calibration`` (N, C, H, W), one image a batch."""
    import nncf  # optional dependency

    samples = [calibration[i:i + 1].numpy() for i in range(len(calibration))]
    # NNCF draws its own progress bars on stdout; our commands keep stdout for their table and --json line.
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=min(subset_size, len(samples)))


def runtime_pair(model: nn.Module, input_shape, calibration: torch.Tensor) -> tuple:
    """(fp32, int8) ``openvino.Model`` of ``model``'s float network; int8 calibrated on ``calibration``."""
    require("OpenVINO timing")
    fp32 = convert(model, input_shape)
    return fp32, quantize_nncf(fp32, calibration)


@torch.no_grad()
def export_openvino(model: nn.Module, path: str, input_shape=None, calibration: torch.Tensor | None = None,
                    rtol: float = 1e-3, atol: float = 1e-4) -> dict:
    """Write ``model`` as OpenVINO IR (``path`` = the .xml; the weights go beside it as .bin).

    fp32, or int8 (NNCF) when ``calibration`` is given.  The IR is compiled and run first: fp32
    must match torch within rtol/atol, int8 must keep the top class on most of 16 inputs (its
    error is reported, not bounded).  Both files appear together or not at all."""
    require("--format openvino")
    import openvino as ov  # optional dependency

    if not str(path).endswith(".xml"):
        raise UserError(f"--out for --format openvino must end in .xml (the weights go beside it as .bin), "
                        f"got {path!r}")
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
    if not input_shape:
        raise UserError("the model records no input shape; give one (CxHxW)")
    ov_model = convert(model, input_shape)
    if calibration is not None:
        ov_model = quantize_nncf(ov_model, calibration)
    example = torch.randn(16, *input_shape, generator=torch.Generator().manual_seed(0))
    expected = float_copy(model)(example)
    got = OpenVinoModule(ov_model, 1)(example)
    diff = float((got - expected).abs().max())
    agree = float((got.argmax(1) == expected.argmax(1)).float().mean())
    if calibration is None and not torch.allclose(got, expected, rtol=rtol, atol=atol):
        raise RuntimeError(f"OpenVINO disagrees with torch on the converted model (max |diff| {diff:.3g})")
    folder = os.path.dirname(os.path.abspath(path))
    bin_path = path[:-4] + ".bin"
    staging = tempfile.mkdtemp(dir=folder, prefix=".ov-")
    try:  # write both files aside, then move the weights in first and the model file last
        ov.save_model(ov_model, os.path.join(staging, "model.xml"), compress_to_fp16=False)
        os.replace(os.path.join(staging, "model.bin"), bin_path)
        os.replace(os.path.join(staging, "model.xml"), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"size_bytes": os.path.getsize(path) + os.path.getsize(bin_path), "max_abs_diff": diff,
            "top1_agreement": agree, "precision": "int8" if calibration is not None else "fp32", "bin": bin_path}
