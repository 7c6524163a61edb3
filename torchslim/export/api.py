"""``export(model, ExportConfig(format=...), data, path=...)``: write a deployable file of a model.

One verb for the three formats (a registry keyed by format): ``packed`` (the compressed
container, read back before it is kept), ``onnx`` (float graph, checked with onnxruntime)
and ``openvino`` (IR; int8 by NNCF when ``data`` gives calibration images).  The model is
never changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigMixin
from ..data.calibration import calibration_images
from ..errors import unknown_choice
from ..nn import Registry
from .onnx import export_onnx
from .openvino import export_openvino
from .packed import load_packed, save_packed
from .registry import PackOptions

__all__ = ["EXPORT_FORMATS", "ExportConfig", "export"]

# format -> writer(model, config, data, path) -> {"size_bytes": ..., and what else the format reports}
EXPORT_FORMATS = Registry("export format")


@dataclass
class ExportConfig(ConfigMixin):
    """The file to write: ``format`` and its options (packed: ``huffman``, ``sparse``, ``fold_bn``,
    ``side_dtype``; onnx: ``opset``; onnx and openvino: ``input_shape``; openvino: ``calib`` images)."""

    option_kind = "export option"

    format: str = "packed"
    huffman: bool = False
    sparse: bool = True
    fold_bn: bool = True
    side_dtype: str = "float32"
    input_shape: tuple | None = None
    opset: int = 17
    calib: int = 300

    def __post_init__(self):
        if self.format not in EXPORT_FORMATS:
            raise unknown_choice("export format", self.format, EXPORT_FORMATS)
        self.input_shape = tuple(self.input_shape) if self.input_shape else None


def export(model: nn.Module, config: ExportConfig, data=None, *, path) -> dict:
    """Write ``model`` to ``path`` as ``config.format``; returns ``{"size_bytes", ...}``."""
    return EXPORT_FORMATS[config.format](model, config, data, path)


@EXPORT_FORMATS.register("packed")
def _packed(model, config, data, path) -> dict:
    options = PackOptions(huffman=config.huffman, sparse=config.sparse, fold_bn=config.fold_bn,
                          side_dtype=config.side_dtype)
    size = save_packed(model, path, options)
    try:
        load_packed(path)  # read back: a file that cannot be loaded is never left behind
    except BaseException:
        os.remove(path)
        raise
    return {"size_bytes": size}


@EXPORT_FORMATS.register("onnx")
def _onnx(model, config, data, path) -> dict:
    info = export_onnx(model, path, input_shape=config.input_shape, opset=config.opset)
    return {"size_bytes": info["size_bytes"], "max_abs_diff": info["max_abs_diff"]}


@EXPORT_FORMATS.register("openvino")
def _openvino(model, config, data, path) -> dict:
    calibration, input_shape = None, config.input_shape
    if data is not None:  # int8, calibrated on the first ``calib`` training images
        calibration = torch.cat(calibration_images(data, config.calib))
        input_shape = input_shape or tuple(data.input_shape)
    info = export_openvino(model, path, input_shape=input_shape, calibration=calibration)
    return {key: info[key] for key in ("size_bytes", "max_abs_diff", "top1_agreement", "precision", "bin")}
