"""``torchslim export FILE --format packed|onnx|openvino --out PATH``: write a deployable file.

``packed`` is the compressed container (:mod:`torchslim.export.packed`): real
bit-packed codes, sparse indices and codebooks, checksummed, readable by
``torchslim.load``.  ``onnx`` writes a float ONNX graph checked with onnxruntime.
``openvino`` writes OpenVINO IR (.xml + .bin): fp32, or int8 by NNCF post-training
quantization calibrated on ``--data`` (needs the ``torchslim[openvino]`` extra).
``compression_ratio`` is measured against the float32 file of the same model.
"""

from __future__ import annotations

import os

from ..errors import UserError
from ..flags.verbs import add_export_flags
from .common import check_out_path, emit, load_data, parse_shape


def add_parser(subparsers):
    parser = subparsers.add_parser("export", help="write a packed (compressed), ONNX or OpenVINO file of a saved model")
    add_export_flags(parser)
    parser.set_defaults(run=run)


# formats whose exporter's own failures are reported in one line
_EXPORTERS = {"onnx": "ONNX", "openvino": "OpenVINO"}


def run(args) -> int:
    from .. import load  # lazy: loads when the verb runs
    from ..export import ExportConfig, export  # lazy: loads when the verb runs
    from ..export.onnx import check_opset, float32_size  # lazy: loads when the verb runs

    check_out_path(args.out)
    if args.format == "onnx":
        check_opset(args.opset)  # before loading, and before torch prints its warnings
    if args.format == "openvino":
        from ..export.openvino import require  # lazy: loads when the verb runs

        require("--format openvino")  # before loading anything
    elif args.data:
        raise UserError("--data is only for --format openvino (int8 calibration)")
    if args.calib < 1:
        raise UserError(f"--calib must be at least 1 (got {args.calib})")
    model = load(args.file)
    baseline = float32_size(model)
    config = ExportConfig(format=args.format, huffman=args.huffman, sparse=not args.dense, fold_bn=args.fold_bn,
                          side_dtype=args.side_dtype, opset=args.opset, calib=args.calib,
                          input_shape=parse_shape(args.input) if args.input else None)
    train = load_data(args, "train") if args.format == "openvino" and args.data else None
    try:
        extra = export(model, config, train, path=args.out)
    except RuntimeError as exc:
        if args.format not in _EXPORTERS:
            raise
        raise UserError(f"{_EXPORTERS[args.format]} export of {args.file} failed: {str(exc).splitlines()[0]}") from None
    size = extra.pop("size_bytes")
    result = {"format": args.format, "size_bytes": size, "float32_bytes": baseline,
              "compression_ratio": baseline / size, "out": args.out, **extra}
    text = (f"{args.format}: {args.out} {size:,} B, {baseline / size:.2f}x smaller than the float32 file "
            f"({baseline:,} B)")
    emit(args, result, text)
    return 0
