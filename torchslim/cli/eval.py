"""``torchslim eval``: top-1 / top-5 of a saved model on a data set."""

from __future__ import annotations

from ..checks import POSITIVE_INT
from ..flags.common import add_data_args, add_json_arg
from .common import check_model_data, emit, load_data


def add_parser(subparsers):
    parser = subparsers.add_parser("eval", help="evaluate a saved model")
    parser.add_argument("file", help="a model saved by torchslim")
    add_data_args(parser)
    parser.add_argument("--split", default="test", choices=["train", "holdout", "test"])
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    parser.add_argument("--device", default="cpu")
    add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import load  # lazy: loads when the verb runs
    from ..train import evaluate, resolve_device  # lazy: loads when the verb runs

    model = load(args.file)
    dataset = load_data(args, args.split, getattr(model, "input_shape", None))
    check_model_data(model, dataset, args.file, args.data)
    device = resolve_device(args.device)
    metrics = evaluate(model.to(device), dataset, batch_size=args.batch_size, device=device, progress=not args.json)
    emit(args, metrics, f"{args.file} on {args.data} ({args.split}, {metrics['n']} images): "
                        f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, loss {metrics['loss']:.4f}")
    return 0
