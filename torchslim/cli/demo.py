"""``torchslim demo``: the README's main job.

Trains (or reuses) a reduced-width VGG14 baseline on fashion-mnist-32, then
evaluates and profiles it.  Falls back to sklearn's digits when Fashion-MNIST is
not installed, and says so.
"""

from __future__ import annotations

import json
import os
import time

from ..errors import UserError
from .common import add_json_arg, emit


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="train and profile a baseline end to end")
    parser.add_argument("--out", default="demo-out", help="output folder (reused as a cache)")
    parser.add_argument("--quick", action="store_true", help="a 1-epoch run on a subset (about a minute)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    add_json_arg(parser)
    parser.set_defaults(run=run)


def _pick_data(quick: bool):
    from ..data import load_dataset

    subset = 6000 if quick else None
    try:
        return "fashion-mnist-32", load_dataset("fashion-mnist-32", "train", subset=subset), \
            load_dataset("fashion-mnist-32", "test", subset=2000 if quick else None)
    except UserError as exc:
        print(f"Fashion-MNIST is not available ({exc}); using sklearn digits instead.")
        return "digits-32", load_dataset("digits-32", "train"), load_dataset("digits-32", "test")


def run(args) -> int:
    from .. import load, models, save
    from ..profile import format_profile, profile_model
    from ..train import TrainConfig, evaluate, fit

    os.makedirs(args.out, exist_ok=True)
    data_name, train_set, test_set = _pick_data(args.quick)
    epochs = args.epochs or (1 if args.quick else 3)
    base_path = os.path.join(args.out, f"vgg14-w0.25-{data_name}-e{epochs}{'-quick' if args.quick else ''}.safetensors")
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, schedule="onecycle", seed=0)
    began = time.perf_counter()
    if os.path.exists(base_path):
        print(f"reusing the trained baseline {base_path}")
        model = load(base_path)
    else:
        print(f"training vgg14 (width 0.25) on {data_name}: {len(train_set.labels)} images, {epochs} epoch(s)")
        model = models.create("vgg14", num_classes=train_set.num_classes, in_channels=train_set.input_shape[0],
                              width_mult=0.25)
        fit(model, train_set, config, checkpoint_path=base_path + ".ckpt", progress=not args.json)
        save(model, base_path, data=data_name, train=config.to_dict())
        os.remove(base_path + ".ckpt")
    metrics = evaluate(model, test_set)
    prof = profile_model(model, train_set.input_shape, path=base_path, threads=args.threads, per_layer=False)
    summary = {"model": "vgg14", "width_mult": 0.25, "data": data_name, "top1": metrics["top1"],
               "params": prof.params, "macs": prof.macs, "size_bytes": prof.size_bytes,
               "latency_ms": prof.latency_ms, "threads": prof.threads, "file": base_path,
               "seconds": round(time.perf_counter() - began, 1)}
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    text = "\n".join([
        "", f"{'model':<20}{'top-1':>8}{'params':>10}{'MACs':>12}{'bytes':>11}{'ms (b=1)':>10}",
        f"{'vgg14 w0.25':<20}{metrics['top1']:>8.4f}{prof.params:>10,}{prof.macs:>12,}{prof.size_bytes:>11,}"
        f"{prof.latency_ms:>10.3f}",
        "", format_profile(prof), f"results in {os.path.abspath(args.out)}",
    ])
    emit(args, summary, text)
    return 0
