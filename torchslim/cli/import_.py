"""``torchslim import``: a torchvision, timm or own model, with its weights, as a torchslim file."""

from __future__ import annotations

import json
import os

from ..errors import UserError
from ..flags.verbs import add_import_flags
from .common import check_input_fits, check_out_path, emit, load_data, parse_shape


def add_parser(subparsers):
    parser = subparsers.add_parser("import", help="bring a torchvision, timm or own model (and its weights) in")
    add_import_flags(parser)
    parser.set_defaults(run=run)


def _options(text):
    if text is None:
        return {}
    try:
        options = json.loads(text)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise UserError(f"--options must be a JSON object such as '{{\"drop_rate\": 0.1}}', got {text!r}")
    return options


def _check_paths(args) -> None:
    check_out_path(args.out)
    if args.weights and os.path.exists(args.out) and os.path.samefile(args.out, args.weights):
        raise UserError(f"--out {args.out} is the --weights file; write the torchslim file elsewhere")
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be a positive integer, got {args.num_classes}")


def _shape_for_data(args) -> tuple:
    """(input shape, classes, whether the classes came from --data) from the flags and the data set."""
    input_shape = parse_shape(args.input) if args.input else None
    if not args.data:
        return input_shape, args.num_classes, False
    dataset = load_data(args, "train", input_shape=input_shape)
    classes = args.num_classes if args.num_classes is not None else dataset.num_classes
    return input_shape or tuple(dataset.input_shape), classes, args.num_classes is None


def run(args) -> int:
    from .. import save  # lazy: loads when the verb runs
    from ..io.importer import ImportConfig, import_model  # lazy: loads when the verb runs
    from ..profile import count_params  # lazy: loads when the verb runs

    _check_paths(args)
    input_shape, num_classes, head_for_data = _shape_for_data(args)
    config = ImportConfig(source=args.source, weights=args.weights, num_classes=num_classes,
                          input_shape=input_shape, options=_options(args.options), seed=args.seed,
                          keep_fitting_head=head_for_data)
    model, done = import_model(config)
    shape = tuple(model.input_shape)
    classes = int(check_input_fits(model, shape, done["source"]).shape[-1])
    save(model, args.out, input_shape=shape, num_classes=classes,
         imported={"source": args.source, "weights": os.path.basename(args.weights) if args.weights else None})
    result = {"out": args.out, "source": done["source"], "input_shape": list(shape), "num_classes": classes,
              "params": count_params(model), "tensors_loaded": done["tensors_loaded"],
              "head_replaced": done["head_replaced"]}
    weights = f" with {done['tensors_loaded']} tensors from {args.weights}" if args.weights else " (fresh weights)"
    head = f"; new {classes}-class head ({', '.join(done['head_replaced'])})" if done["head_replaced"] else ""
    emit(args, result, f"{done['source']}{weights}{head}: input {'x'.join(map(str, shape))}, "
                       f"{result['params']:,} params; saved {args.out}")
    return 0
