"""``torchslim quantize``: binary / ternary / low-bit quantization-aware fine-tuning, or int8."""

from __future__ import annotations

import os
import time

from ..checks import SEED
from .common import (add_data_args, add_json_arg, add_kd_args, check_model_data, check_out_path, emit, kd_loss_for,
                     load_data)
from .export import SIDE_DTYPES

ACT_SCALES = ("fit", "unit")
CLI_METHODS = ("bnn", "bnn-stochastic", "bwn", "xnor", "bireal", "twn", "dorefa", "hwgq-bwn", "hwgq-uniform-bwn",
               "hwgq-zero-uniform-bwn", "int8")


def add_parser(subparsers):
    parser = subparsers.add_parser("quantize", help="quantize a trained model (binary, ternary, k-bit, int8)")
    parser.add_argument("file", help="trained float model (.safetensors from torchslim train)")
    parser.add_argument("--method", required=True, help=", ".join(CLI_METHODS))
    parser.add_argument("--weight-bits", type=int, default=None)
    parser.add_argument("--act-bits", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tune epochs (default 3); 0 converts and calibrates only")
    parser.add_argument("--alt-update", action="store_true", help="layer-wise alternating update of BWN layers")
    parser.add_argument("--alt-init", action="store_true",
                        help="also run the alternating update before fine-tuning (binary weights that reproduce "
                             "the float layers' outputs as the starting point)")
    parser.add_argument("--alt-guard", dest="alt_guard", action="store_true", default=None,
                        help="--alt-update keeps a layer's new weights only if the network's outputs on the "
                             "next --calib training images (held out from the fit) move closer to the float model's "
                             "(the default with --alt-update: unguarded, it cost 5-6 points where it hurt)")
    parser.add_argument("--no-alt-guard", dest="alt_guard", action="store_false",
                        help="--alt-update keeps every layer's new weights (the unguarded update)")
    parser.add_argument("--act-scale", choices=ACT_SCALES, default=None,
                        help="HWGQ levels: 'fit' scales each layer's levels to its input on the calibration "
                             "images (the default), 'unit' keeps the unit half-normal levels")
    parser.add_argument("--keep-first-last", dest="keep_first_last", action="store_true", default=True,
                        help="keep the first and last layers float (default)")
    parser.add_argument("--no-keep-first-last", dest="keep_first_last", action="store_false")
    parser.add_argument("--teacher", nargs="?", const="self", default=None, metavar="FILE",
                        help="distil from a teacher during fine-tuning (no FILE: the input float model, which is "
                             "the default when the input model is float)")
    parser.add_argument("--no-teacher", action="store_true",
                        help="fine-tune on the labels alone, without the default teacher")
    add_kd_args(parser)
    parser.add_argument("--calib", type=int, default=1024, help="calibration images (BN, alt-update, int8)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--packed", default=None, metavar="FILE", help="also write the bit-packed file here")
    parser.add_argument("--packed-side", choices=SIDE_DTYPES, default=None,
                        help="packed file: dtype of the binary layers' per-channel scale and bias (float32 is "
                             "exact; int8 keeps one float32 step per layer; the float layers stay float32)")
    add_data_args(parser)
    parser.add_argument("--out", required=True, help="output: frozen .safetensors, or .onnx for int8")
    add_json_arg(parser)
    parser.set_defaults(run=run)


# options of the quantization-aware path that the int8 post-training path has no use for
_QAT_ONLY = {"epochs": "--epochs", "alt_update": "--alt-update", "alt_init": "--alt-init", "alt_guard": "--alt-guard",
             "act_scale": "--act-scale", "teacher": "--teacher", "no_teacher": "--no-teacher", "packed": "--packed",
             "packed_side": "--packed-side"}


def _check_args(args):
    from ..errors import UserError, unknown_choice  # lazy: loads when the verb runs

    if args.method not in CLI_METHODS:
        raise unknown_choice("quantization method", args.method, CLI_METHODS)
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
    from ..quant import QuantConfig  # lazy: loads when the verb runs; checks bit widths first

    return QuantConfig(method=args.method, weight_bits=args.weight_bits, act_bits=args.act_bits,
                       keep_first_last=args.keep_first_last)


def run(args) -> int:
    import torch  # lazy: loads when the verb runs

    from .. import load, save  # lazy: loads when the verb runs
    from ..quant import clip_latent_weights, freeze, quantize  # lazy: loads when the verb runs
    from ..quant.altupdate import (alternating_update, calibration_batches,  # lazy: loads when the verb runs
                                   recalibrate_bn)
    from ..quant.calibrate import calibrate_act_scales  # lazy: loads when the verb runs
    from ..export.frozen import frozen_size, save_frozen  # lazy: loads when the verb runs
    from ..train import TrainConfig, evaluate, fit  # lazy: loads when the verb runs

    config = _check_args(args)
    torch.manual_seed(args.seed)
    model = load(args.file)
    shape = getattr(model, "input_shape", None)
    train, test = load_data(args, "train", shape), load_data(args, "test", shape)
    check_model_data(model, train, args.file, args.data)
    if config is not None and args.teacher is None and not args.no_teacher and _is_float(model):
        args.teacher = "self"  # the float model at hand teaches its quantized copy (measured best)
    if config is not None:  # an unsupported layer is refused before any long work
        qmodel = quantize(model, config)
        loss_fn = _teacher_loss(args, model, train.input_shape)
    before = evaluate(model, test)["top1"]
    batches = calibration_batches(train, args.calib)
    float_bytes = os.path.getsize(args.file)
    began = time.perf_counter()
    if args.method == "int8":
        return _run_int8(args, model, batches, train, test, before, float_bytes)
    scales = calibrate_act_scales(qmodel, batches) if args.act_scale == "fit" else {}
    recalibrate_bn(qmodel, batches)
    init_layers = []
    if args.alt_init:
        qmodel, reports = alternating_update(qmodel, batches, reference=model, progress=not args.json)
        init_layers = [r.to_dict() for r in reports]
    history = {"epochs": []}
    if args.epochs:
        train_config = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0,
                                   schedule="cosine", batch_size=args.batch_size, seed=args.seed, device=args.device)
        history = fit(qmodel, train, train_config, loss_fn=loss_fn, on_step=clip_latent_weights,
                      progress=not args.json)
        qmodel.cpu()
        recalibrate_bn(qmodel, batches)
    layers = []
    if args.alt_update:
        judge = calibration_batches(train, args.calib, skip=args.calib) if args.alt_guard else None
        qmodel, reports = alternating_update(qmodel, batches, reference=model, progress=not args.json,
                                             guard=args.alt_guard, guard_batches=judge)
        layers = [r.to_dict() for r in reports]
    frozen = freeze(qmodel)
    after = evaluate(frozen, test)["top1"]
    save(frozen, args.out, data=args.data, top1=after, top1_float=before, input_shape=train.input_shape,
         num_classes=train.num_classes)
    # Measured on the saved model, so it is the size `torchslim export OUT --format packed` writes.
    saved = load(args.out)
    packed = save_frozen(saved, args.packed, side_dtype=args.packed_side) if args.packed \
        else frozen_size(saved, side_dtype=args.packed_side)
    result = {"top1_before": before, "top1_after": after, "size_bytes_float": float_bytes,
              "size_bytes_packed": packed, "packed_side": args.packed_side,
              "compression_ratio": float_bytes / packed, "method": args.method,
              "config": config.to_dict(), "epochs": args.epochs, "teacher": args.teacher, "alt_guard": args.alt_guard, "seconds": round(time.perf_counter() - began, 2),
              "history": history["epochs"], "act_scales": scales, "alt_init": [
                  {k: v for k, v in layer.items() if k != "history"} for layer in init_layers], "alt_update": [
                  {k: v for k, v in layer.items() if k != "history"} for layer in layers], "out": args.out}
    lines = [f"{args.method}: top-1 {before:.4f} -> {after:.4f}; {float_bytes} -> {packed} bytes packed "
             f"({float_bytes / packed:.1f}x); saved {args.out}"]
    lines += [f"  {r['name']}: reconstruction error {r['error_before']:.4f} -> {r['error_after']:.4f}"
              for r in layers]
    emit(args, result, "\n".join(lines))
    return 0


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
