"""``torchslim quantize``: binary / ternary / low-bit quantization-aware fine-tuning, or int8."""

from __future__ import annotations

import os
import time

from ..flags.verbs import QUANTIZE_METHODS, add_quantize_flags
from .common import check_model_data, check_out_path, emit, kd_loss_for, load_data


def add_parser(subparsers):
    parser = subparsers.add_parser("quantize", help="quantize a trained model (binary, ternary, k-bit, int8)")
    add_quantize_flags(parser)
    parser.set_defaults(run=run)


# options of the quantization-aware path that the int8 post-training path has no use for
_QAT_ONLY = {"epochs": "--epochs", "alt_update": "--alt-update", "alt_init": "--alt-init", "alt_guard": "--alt-guard",
             "act_scale": "--act-scale", "teacher": "--teacher", "no_teacher": "--no-teacher", "packed": "--packed",
             "packed_side": "--packed-side"}


def _check_args(args):
    from ..errors import UserError, unknown_choice  # lazy: loads when the verb runs

    if args.method not in QUANTIZE_METHODS:
        raise unknown_choice("quantization method", args.method, QUANTIZE_METHODS)
    if args.method == "int8":
        given = [flag for key, flag in _QAT_ONLY.items() if getattr(args, key) not in (None, False)]
        if args.alt_guard is False:
            given.append("--no-alt-guard")
        if given:
            raise UserError(f"--method int8 is post-training static quantization to an ONNX model; "
                            f"{', '.join(given)} apply to the other methods only")
        if args.weight_bits not in (None, 8) or args.act_bits not in (None, 8):
            raise UserError("--method int8 uses 8-bit weights and activations; drop --weight-bits/--act-bits")
        if not args.out.endswith(".onnx"):
            raise UserError(f"--method int8 writes an ONNX Runtime model: give --out a .onnx name (got {args.out})")
    else:
        if args.alt_guard is not None and not args.alt_update:
            flag = "--alt-guard" if args.alt_guard else "--no-alt-guard"
            raise UserError(f"{flag} sets how the update after fine-tuning is guarded: add --alt-update")
        if args.no_teacher and args.teacher is not None:
            raise UserError("--teacher and --no-teacher contradict each other: give one")
        args.alt_guard = args.alt_update if args.alt_guard is None else args.alt_guard  # guarded unless told
        if args.packed_side and not args.packed:
            raise UserError("--packed-side sets how --packed stores scales: add --packed FILE")
        args.epochs = 3 if args.epochs is None else args.epochs
        args.act_scale = args.act_scale or "fit"
        args.packed_side = args.packed_side or "float32"
    if (args.epochs or 0) < 0 or args.calib < 1:
        raise UserError(f"need --epochs >= 0 and --calib >= 1 (got {args.epochs}, {args.calib})")
    check_out_path(args.out)
    if args.packed:
        check_out_path(args.packed, "--packed")
    if args.method == "int8":
        return None
    from ..quant import QATConfig, QuantConfig  # lazy: loads when the verb runs; checks bit widths first

    quant = QuantConfig(method=args.method, weight_bits=args.weight_bits, act_bits=args.act_bits,
                        keep_first_last=args.keep_first_last)
    return QATConfig(quant=quant, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                     device=args.device, calib=args.calib, act_scale=args.act_scale, alt_init=args.alt_init,
                     alt_update=args.alt_update, alt_guard=args.alt_guard)


def run(args) -> int:
    import torch  # lazy: loads when the verb runs

    from .. import load, save  # lazy: loads when the verb runs
    from ..data.calibration import calibration_images  # lazy: loads when the verb runs
    from ..export.frozen import frozen_size, save_frozen  # lazy: loads when the verb runs
    from ..quant import train_quantized  # lazy: loads when the verb runs
    from ..train import evaluate  # lazy: loads when the verb runs

    config = _check_args(args)
    torch.manual_seed(args.seed)
    model = load(args.file)
    shape = getattr(model, "input_shape", None)
    train, test = load_data(args, "train", shape), load_data(args, "test", shape)
    check_model_data(model, train, args.file, args.data)
    if config is not None and args.teacher is None and not args.no_teacher and _is_float(model):
        args.teacher = "self"  # the float model at hand teaches its quantized copy (measured best)
    float_bytes = os.path.getsize(args.file)
    if args.method == "int8":
        before = evaluate(model, test)["top1"]
        return _run_int8(args, model, calibration_images(train, args.calib), train, test, before, float_bytes)
    loss_fn = _teacher_loss(args, model, train.input_shape)
    began = time.perf_counter()
    # quantizing is the verb's first step, so an unsupported layer is refused before any long work
    result = train_quantized(model, config, train, loss_fn=loss_fn, progress=not args.json)
    before, after = evaluate(model, test)["top1"], evaluate(result.model, test)["top1"]
    save(result.model, args.out, data=args.data, top1=after, top1_float=before, input_shape=train.input_shape,
         num_classes=train.num_classes)
    # Measured on the saved model, so it is the size `torchslim export OUT --format packed` writes.
    saved = load(args.out)
    packed = save_frozen(saved, args.packed, side_dtype=args.packed_side) if args.packed \
        else frozen_size(saved, side_dtype=args.packed_side)
    layers = result.alt_update
    payload = {"top1_before": before, "top1_after": after, "size_bytes_float": float_bytes,
               "size_bytes_packed": packed, "packed_side": args.packed_side,
               "compression_ratio": float_bytes / packed, "method": args.method,
               "config": config.quant.to_dict(), "epochs": args.epochs, "teacher": args.teacher,
               "alt_guard": args.alt_guard, "seconds": round(time.perf_counter() - began, 2),
               "history": result.history, "act_scales": result.act_scales,
               "alt_init": [_without_history(layer) for layer in result.alt_init],
               "alt_update": [_without_history(layer) for layer in layers], "out": args.out}
    lines = [f"{args.method}: top-1 {before:.4f} -> {after:.4f}; {float_bytes} -> {packed} bytes packed "
             f"({float_bytes / packed:.1f}x); saved {args.out}"]
    lines += [f"  {r['name']}: reconstruction error {r['error_before']:.4f} -> {r['error_after']:.4f}"
              for r in layers]
    emit(args, payload, "\n".join(lines))
    return 0


def _without_history(layer: dict) -> dict:
    return {k: v for k, v in layer.items() if k != "history"}


def _is_float(model) -> bool:
    """No quantized layer (quantization-aware or frozen) in ``model``."""
    from ..quant.modules import QUANT_LAYERS  # lazy: loads when the verb runs

    return not any(isinstance(m, QUANT_LAYERS) for m in model.modules())


def _teacher_loss(args, model, input_shape):
    if args.teacher is None:
        return kd_loss_for(args, None)
    if args.teacher == "self":
        return kd_loss_for(args, model)
    from .. import load  # lazy: loads when the verb runs

    return kd_loss_for(args, load(args.teacher), model, input_shape, f"teacher {args.teacher}")


def _run_int8(args, model, batches, train, test, before, float_bytes):
    from ..quant.int8 import quantize_int8  # lazy: loads when the verb runs
    from ..train import evaluate  # lazy: loads when the verb runs

    int8_model = quantize_int8(model, batches, train.input_shape, path=args.out)
    after = evaluate(int8_model, test)["top1"]
    size = os.path.getsize(args.out)
    result = {"top1_before": before, "top1_after": after, "size_bytes_float": float_bytes,
              "size_bytes_packed": size, "compression_ratio": float_bytes / size, "method": "int8",
              "backend": "onnxruntime", "out": args.out}
    emit(args, result, f"int8 (ONNX Runtime QDQ): top-1 {before:.4f} -> {after:.4f}; {float_bytes} -> {size} "
                       f"bytes ({float_bytes / size:.1f}x); saved {args.out}")
    return 0
