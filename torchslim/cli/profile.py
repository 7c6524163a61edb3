"""``torchslim profile``: params, MACs, bytes on disk and latency, with a per-layer table."""

from __future__ import annotations

from ..errors import UserError
from ..checks import POSITIVE_INT, THREADS, WIDTH, create_model
from ..flags.common import add_json_arg
from .common import check_input_fits, emit, parse_shape


def add_parser(subparsers):
    parser = subparsers.add_parser("profile", help="measure a saved model or a zoo model")
    parser.add_argument("file", nargs="?", help="a model saved by torchslim")
    parser.add_argument("--model", metavar="SOURCE", help="profile a fresh model instead of a file: a zoo "
                        "name, torchvision:NAME, timm:NAME or PKG.MODULE:CALLABLE")
    parser.add_argument("--width-mult", type=WIDTH, default=1.0, help="channel width multiplier, in (0, 64]")
    parser.add_argument("--input", help="input shape CxHxW (default: recorded in the file, or the model's)")
    parser.add_argument("--num-classes", type=POSITIVE_INT, default=10)
    parser.add_argument("--threads", type=THREADS, default=None, help="torch threads for latency (default: torch's)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes to time")
    parser.add_argument("--repeats", type=POSITIVE_INT, default=30)
    parser.add_argument("--list", action="store_true", help="list the zoo models and exit")
    add_json_arg(parser)
    parser.set_defaults(run=run)


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes must be positive integers like 1,32 (got {text!r})")
    return sizes


def run(args) -> int:
    from .. import load, models  # lazy: loads when the verb runs
    from ..profile import format_profile, profile_model  # lazy: loads when the verb runs

    if args.list:
        names = models.list_models()
        emit(args, {"models": names}, "\n".join(names))
        return 0
    if bool(args.file) == bool(args.model):
        raise UserError("give either a model FILE or --model NAME")
    if args.file:
        model = load(args.file)
        name = args.file
    else:
        model = create_model(args.model, num_classes=args.num_classes, width_mult=args.width_mult)
        name = args.model
    input_shape = parse_shape(args.input) if args.input else tuple(model.input_shape)
    if args.model and tuple(input_shape) != tuple(model.input_shape):
        model = create_model(args.model, num_classes=args.num_classes, width_mult=args.width_mult,
                              in_channels=input_shape[0], input_size=input_shape[1:])
    check_input_fits(model, input_shape, name)
    result = profile_model(model, input_shape, path=args.file, batch_sizes=_batch_sizes(args.batch_sizes),
                           threads=args.threads, repeats=args.repeats)
    emit(args, result.to_dict(layers=True), format_profile(result, title=f"{name}:"))
    return 0
