"""``torchslim train``: train a zoo model on a data set and save it."""

from __future__ import annotations

import os
import time

from ..checks import create_model
from ..flags.verbs import add_train_flags
from .common import check_input_fits, check_out_path, emit, load_data, training_config


def add_parser(subparsers):
    parser = subparsers.add_parser("train", help="train a zoo model and save it")
    add_train_flags(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import save  # lazy: loads when the verb runs
    from ..profile import count_macs, count_params  # lazy: loads when the verb runs
    from ..train import evaluate, fit, init_from_env  # lazy: loads when the verb runs
    from ..train.loop import seed_everything  # lazy: loads when the verb runs
    from ..train.distributed import barrier  # lazy: loads when the verb runs

    config = training_config(args)
    check_out_path(args.out)
    train_set = load_data(args, "train")
    test_set = load_data(args, "test")
    channels, height, width = train_set.input_shape
    seed_everything(config.seed)  # the initial weights too: the same command gives the same model
    model = create_model(args.model, num_classes=train_set.num_classes, in_channels=channels,
                          width_mult=args.width_mult, input_size=(height, width))
    check_input_fits(model, train_set.input_shape, args.model, args.data)
    dist_info = init_from_env(args.device)
    checkpoint = args.out + ".ckpt"
    began = time.perf_counter()
    history = fit(model, train_set, config, checkpoint_path=checkpoint, progress=not args.json)
    seconds = time.perf_counter() - began
    if not dist_info.is_main:
        barrier()
        return 0
    metrics = evaluate(model, test_set, device=config.device)
    save(model, args.out, data=args.data, train=config.to_dict(), top1=metrics["top1"],
         input_shape=train_set.input_shape, num_classes=train_set.num_classes)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    barrier()
    result = {
        "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
        "params": count_params(model), "macs": count_macs(model.cpu(), train_set.input_shape),
        "epochs": config.epochs, "train_seconds": round(seconds, 2), "world_size": dist_info.world_size,
        "out": args.out, "history": history["epochs"],
    }
    text = (f"{args.model} (width {args.width_mult}) on {args.data}: top-1 {metrics['top1']:.4f}, "
            f"top-5 {metrics['top5']:.4f} after {config.epochs} epochs in {seconds:.1f} s; saved {args.out}")
    emit(args, result, text)
    return 0
