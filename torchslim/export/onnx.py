"""ONNX export of any compressed model, checked against onnxruntime.

ONNX has no operator for codebook gathers or bit-packed weights that runtimes
execute efficiently, so compressed layers are first replaced by their plain float
equivalents (each layer's ``to_float``, :func:`torchslim.nn.float_copy`); the exported graph computes exactly
what the compressed model computes.  The file is written atomically and only
after onnxruntime reproduced the torch outputs.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_path
from ..nn import float_copy


def float32_size(model: nn.Module) -> int:
    """Bytes of :func:`torchslim.save` for the float32 version of ``model`` (the ratio's baseline).

    The notes in ``torchslim_meta`` are left out: a model's packed copy carries fewer of them
    than its .safetensors file, and the baseline must not depend on which one was read.
    """
    from ..profile import serialized_size  # lazy: profile loads only to measure

    dense = float_copy(model)
    dense.torchslim_meta = {}
    for module in dense.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_floating_point() and param.dtype != torch.float32:
                module._parameters[name] = nn.Parameter(param.detach().float())
    return serialized_size(dense)


@torch.no_grad()
def export_onnx(model: nn.Module, path, input_shape=None, opset: int = 17, check: bool = True,
                rtol: float = 1e-3, atol: float = 1e-4) -> dict:
    """Export ``model`` to ONNX at ``path``; returns ``{"size_bytes", "max_abs_diff"}``."""
    check_opset(opset)
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
    if not input_shape:
        raise UserError("the model records no input shape; give one (CxHxW)")
    dense = float_copy(model)
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    expected = dense(example).numpy()
    with atomic_path(path) as tmp:
        _export(dense, example, tmp, opset)
        diff = _check_with_onnxruntime(tmp, example.numpy(), expected, rtol, atol) if check else None
    return {"size_bytes": os.path.getsize(path), "max_abs_diff": diff}


def _dynamo_exporter() -> bool:
    return importlib.util.find_spec("onnxscript") is not None


def supported_opsets() -> range:
    """The opsets the exporter :func:`export_onnx` uses accepts, as torch.onnx declares them."""
    from torch.onnx import _constants  # lazy: torch.onnx loads only to export

    high = _constants.ONNX_MAX_OPSET if _dynamo_exporter() else _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    return range(_constants.ONNX_MIN_OPSET, high + 1)


def check_opset(opset: int) -> None:
    """A one-line error for an opset the exporter would refuse only after a page of warnings."""
    opsets = supported_opsets()
    if opset not in opsets:
        raise UserError(f"--opset must be in {opsets.start}..{opsets.stop - 1} for torch {torch.__version__}'s "
                        f"ONNX exporter, got {opset}")


def _export(model, example, path, opset) -> None:
    """torch's exporter: the torch.export-based one when onnxscript is installed, else TorchScript's."""
    if _dynamo_exporter():
        torch.onnx.export(model, (example,), path, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, not gone
        torch.onnx.export(model, (example,), path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)


def _check_with_onnxruntime(path, example, expected, rtol, atol) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example})[0]
    diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise RuntimeError(f"onnxruntime disagrees with torch on the exported model (max |diff| {diff:.3g})")
    return diff
