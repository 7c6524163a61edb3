"""``torchslim sensitivity``: how much top-1 each layer loses when pruned on its own."""

from __future__ import annotations

import sys

from ..errors import UserError
from ..flags.common import add_data_args, add_json_arg
from .common import check_model_data, check_out_path, emit, load_data


def add_parser(subparsers):
    parser = subparsers.add_parser("sensitivity", help="per-layer pruning sensitivity (each layer pruned alone)")
    parser.add_argument("file", help="a model saved by torchslim")
    parser.add_argument("--ratios", default="0.25,0.5,0.75", metavar="R,R,...",
                        help="shares of each layer's channels to remove, in (0, 1); default 0.25,0.5,0.75")
    parser.add_argument("--criterion", default="l1", help="importance criterion that picks the channels (default l1)")
    parser.add_argument("--images", type=int, default=1000, metavar="N",
                        help="evaluate on the first N test images (default 1000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="also draw the curves into a PNG file")
    add_data_args(parser, required=True)
    add_json_arg(parser)
    parser.set_defaults(run=run)


def parse_ratios(text: str) -> list[float]:
    """``"0.25,0.5"`` -> ``[0.25, 0.5]``, each strictly between 0 and 1."""
    from ..prune.sensitivity import check_ratios  # lazy: loads when the verb runs

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = None
    if not values:
        raise UserError(f"--ratios must be comma-separated numbers in (0, 1), e.g. 0.25,0.5,0.75 (got {text!r})")
    try:
        return check_ratios(values)
    except UserError as exc:
        raise UserError(f"--ratios {text}: {exc}") from None


def format_table(result: dict) -> str:
    """One row per layer: channels, then top-1 (%) and its change in points at each ratio."""
    base = result["baseline_top1"]
    width = max([len("layer")] + [len(row["layer"]) for row in result["layers"]]) + 2
    head = f"{'layer':<{width}}{'channels':>9}" + "".join(f"{f'removed {r:.0%}':>20}" for r in result["ratios"])
    lines = [head]
    for row in result["layers"]:
        cells = "".join(f"{f'{t:.2%} ({(t - base) * 100:+.2f})':>20}" for t in row["top1"])
        lines.append(f"{row['layer']:<{width}}{row['channels']:>9}{cells}")
    if not result["layers"]:
        lines.append("(no prunable channel groups)")
    lines.append(f"baseline top-1 {base:.2%} on {result['images']} images; criterion {result['criterion']}; "
                 "in brackets: change in points, no fine-tuning")
    return "\n".join(lines)


def _write_plot(path: str, result: dict) -> None:
    from ..io import atomic_write_bytes  # lazy: loads when the verb runs

    try:
        from ..report.plots import sensitivity_png  # lazy: loads when the verb runs
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'torchslim[report]'") from None
    atomic_write_bytes(path, sensitivity_png(result))


def run(args) -> int:
    from .. import load  # lazy: loads when the verb runs
    from ..prune import get_criterion  # lazy: loads when the verb runs
    from ..prune.sensitivity import sensitivity_sweep  # lazy: loads when the verb runs

    ratios = parse_ratios(args.ratios)
    criterion = get_criterion(args.criterion)
    if args.images < 1 or args.batch_size < 1:
        raise UserError(f"--images and --batch-size must be >= 1 (got {args.images} and {args.batch_size})")
    if args.plot:
        check_out_path(args.plot, "--plot")
    model = load(args.file)
    shape = getattr(model, "input_shape", None)
    test_set = load_data(args, "test", shape)
    check_model_data(model, test_set, args.file, args.data)
    calibration = load_data(args, "train", shape) if criterion.needs_data else None
    quiet = args.json or not sys.stdout.isatty()
    result = sensitivity_sweep(model, test_set, ratios=ratios, criterion=args.criterion, max_images=args.images,
                               batch_size=args.batch_size, calibration=calibration,
                               log=None if quiet else (lambda line: print(line, flush=True)))
    text = format_table(result)
    if args.plot:
        _write_plot(args.plot, result)
        text += f"\nplot {args.plot}"
    emit(args, result, text)
    return 0
