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


def run(args) -> int:
    from .. import load  # lazy: loads when the verb runs
    from ..export import PackOptions, load_packed, save_packed  # lazy: loads when the verb runs
    from ..export.onnx import check_opset, export_onnx, float32_size  # lazy: loads when the verb runs

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
    if args.format == "packed":
        options = PackOptions(huffman=args.huffman, sparse=not args.dense, fold_bn=args.fold_bn,
                              side_dtype=args.side_dtype)
        size = save_packed(model, args.out, options)
        try:
            load_packed(args.out)  # read back: a file that cannot be loaded is never left behind
        except BaseException:
            os.remove(args.out)
            raise
        extra = {}
    elif args.format == "openvino":
        size, extra = _export_openvino(args, model)
    else:
        input_shape = parse_shape(args.input) if args.input else None
        try:
            info = export_onnx(model, args.out, input_shape=input_shape, opset=args.opset)
        except RuntimeError as exc:
            raise UserError(f"ONNX export of {args.file} failed: {str(exc).splitlines()[0]}") from None
        size, extra = info["size_bytes"], {"max_abs_diff": info["max_abs_diff"]}
    result = {"format": args.format, "size_bytes": size, "float32_bytes": baseline,
              "compression_ratio": baseline / size, "out": args.out, **extra}
    text = (f"{args.format}: {args.out} {size:,} B, {baseline / size:.2f}x smaller than the float32 file "
            f"({baseline:,} B)")
    emit(args, result, text)
    return 0


def _export_openvino(args, model) -> tuple[int, dict]:
    """IR files of ``model``: fp32, or int8 calibrated on ``--calib`` training images of ``--data``."""
    import torch  # lazy: loads when the verb runs

    from ..export.openvino import export_openvino  # lazy: loads when the verb runs
    from ..data.calibration import calibration_images  # lazy: loads when the verb runs

    input_shape = parse_shape(args.input) if args.input else None
    calibration = None
    if args.data:
        train = load_data(args, "train")
        calibration = torch.cat(calibration_images(train, args.calib))
        input_shape = input_shape or tuple(train.input_shape)
    try:
        info = export_openvino(model, args.out, input_shape=input_shape, calibration=calibration)
    except RuntimeError as exc:
        raise UserError(f"OpenVINO export of {args.file} failed: {str(exc).splitlines()[0]}") from None
    return info["size_bytes"], {key: info[key] for key in ("max_abs_diff", "top1_agreement", "precision", "bin")}
