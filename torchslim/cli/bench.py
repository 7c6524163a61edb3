"""``torchslim bench``: float vs int8 vs compiled binary of one network, in one run; for a
product-quantized model, its decoded float network against its lookup-table layers."""

from __future__ import annotations

import sys

from ..errors import UserError
from ..flags.common import add_json_arg
from .common import emit


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UserError(f"{flag} takes positive integers like 1,2 (got {text!r})")
    return values


def add_parser(subparsers):
    parser = subparsers.add_parser("bench", help="time float, int8 (ONNX Runtime, OpenVINO when installed) and "
                                   "binary versions of a quantized model "
                                   "(or float against lookup tables for a PQ / Q-CNN model)")
    parser.add_argument("file", help="a quantized model saved by `torchslim quantize`, or a product-quantized one "
                                     "saved by `torchslim compress-weights --method pq|qcnn`")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    parser.add_argument("--openvino", choices=("auto", "require", "off"), default="auto",
                        help="time OpenVINO fp32 and int8 (NNCF): when installed (auto), or fail without the "
                             "torchslim[openvino] extra (require), or never (off)")
    add_json_arg(parser)
    parser.set_defaults(run=run)


COLUMNS = (("float_eager", "torch f32"), ("float_ort", "ORT f32"), ("int8_ort", "ORT int8"),
           ("float_openvino", "OV f32"), ("int8_openvino", "OV int8"), ("binary", "binary"))


def _table(result: dict) -> str:
    shown = [(key, title) for key, title in COLUMNS if any(f"{key}_ms" in r for r in result["runs"])]
    lines = [f"{'batch':>5} {'threads':>7} " + " ".join(f"{title:>9}" for _, title in shown)]
    for r in result["runs"]:
        lines.append(f"{r['batch']:>5} {r['threads']:>7} " + " ".join(f"{r[f'{key}_ms']:>9.3f}" for key, _ in shown))
    if result["layers"]:
        lines.append("")
        lines.append(f"{'layer':<22} {'input':<14} {'mode':<28} {'float ms':>9} {'binary ms':>10} {'speed-up':>9}")
        for row in result["layers"]:
            lines.append(f"{row['layer']:<22} {'x'.join(map(str, row['input'])):<14} {row['mode']:<28} "
                         f"{row['float_ms']:>9.3f} {row['binary_ms']:>10.3f} {row['speedup']:>8.1f}x")
    mem = result["memory"]
    lines.append("")
    lines.append(f"binary vs float: {result['speedup_binary']:.2f}x; int8 vs float: "
                 f"{result['speedup_int8'] if result['speedup_int8'] is None else round(result['speedup_int8'], 2)}x; "
                 f"{mem['binary_layers']} packed layers hold {mem['packed_bytes']:,} B "
                 f"(float32: {mem['float32_bytes']:,} B)")
    if result.get("binary_vs_best_int8"):
        lines.append(f"binary vs the fastest int8: {result['binary_vs_best_int8']:.2f}x")
    lines.append("ISA paths: " + "; ".join(f"{k}: {v}" for k, v in result.get("isa_paths", {}).items()))
    return "\n".join(lines)


def _lookup_table(result: dict) -> str:
    lines = [f"{'batch':>5} {'threads':>7} {'torch f32':>10} {'ORT f32':>9} {'lookup':>9}"]
    for r in result["runs"]:
        ort_f = r.get("float_ort_ms")
        lines.append(f"{r['batch']:>5} {r['threads']:>7} {r['float_eager_ms']:>10.3f} "
                     f"{ort_f if ort_f is None else round(ort_f, 3)!s:>9} {r['lookup_ms']:>9.3f}")
    lines.append("")
    lines.append(f"lookup tables vs float: {result['speedup_lookup']:.2f}x; {len(result['native_layers'])} of "
                 f"{len(result['lookup_layers'])} PQ layers on the native lookup kernel"
                 + (f" (decoded weight: {', '.join(result['decoded_layers'])})" if result["decoded_layers"] else ""))
    return "\n".join(lines)


def run(args) -> int:
    batches, threads = _ints(args.batch, "--batch"), _ints(args.threads, "--threads")
    if args.repeats < 1:
        raise UserError(f"--repeats must be at least 1 (got {args.repeats})")
    from .. import load  # lazy: loads when the verb runs
    from ..deploy.bench import bench_lookup_model, bench_model, has_product_codebooks  # lazy: loads when the verb runs
    from ..deploy.build import isa  # lazy: loads when the verb runs
    from ..quant.modules import has_quantized_weights  # lazy: loads when the verb runs

    model = load(args.file)
    quantized = has_quantized_weights(model)
    if not quantized and has_product_codebooks(model):
        result = bench_lookup_model(model, tuple(model.input_shape), batches, threads, args.repeats)
        result["isa"] = isa()
        emit(args, result, _lookup_table(result))
        return 0
    if not quantized:
        raise UserError(f"{args.file} has no quantized or product-quantized layers; quantize it first with "
                        "`torchslim quantize` or `torchslim compress-weights --method pq|qcnn`")
    if args.openvino == "require":
        from ..export.openvino import require  # lazy: loads when the verb runs

        require("--openvino require")
    openvino = {"auto": None, "require": True, "off": False}[args.openvino]
    result = bench_model(model, tuple(model.input_shape), batches, threads, args.repeats,
                         per_layer=not args.no_layers, openvino=openvino)
    from ..export.openvino import EXTRA, available  # lazy: loads when the verb runs

    if args.openvino == "auto" and not available():
        result["note"] = f"OpenVINO not timed: not installed ({EXTRA})"
        print(f"torchslim: {result['note']}", file=sys.stderr)
    result["isa"] = isa()
    emit(args, result, _table(result))
    return 0
