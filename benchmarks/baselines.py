"""Train every zoo model on fashion-mnist-32 with a stated budget and record the results.

    python benchmarks/baselines.py [--models vgg14,resnet20] [--threads 1] [--force]

Each model is trained with the budget in BUDGET (width, epochs, training images) and
evaluated on the 10k test images, then profiled (params, MACs, file bytes, batch-1 and batch-32 latency).
Trained models go to benchmarks/out/ and are reused by later benchmarks; a model
whose result file exists is skipped unless --force, and an interrupted training
resumes from its checkpoint.  The table is written into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import load_dataset
from torchslim.io import atomic_write_text
from torchslim.profile import profile_model
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")

# (width_mult, epochs, lr, training images): small widths, one or two epochs and class-balanced
# subsets, so the whole zoo trains in well under an hour on a shared 2-core CPU; the budget is
# printed beside every number.
BUDGET = {
    "vgg14": (0.25, 2, 0.05, 20000),
    "resnet56": (0.25, 1, 0.1, 10000),
    "lenet300": (1.0, 3, 0.05, 60000),
    "lenet5": (1.0, 3, 0.05, 60000),
    "vgg11": (0.25, 1, 0.05, 10000),
    "vgg16": (0.25, 1, 0.05, 10000),
    "alexnet": (0.25, 1, 0.05, 10000),
    "resnet20": (0.5, 1, 0.1, 10000),
    "resnet18": (0.125, 1, 0.05, 10000),
    "mobilenetv2": (0.25, 1, 0.05, 10000),
    "shufflenetv2": (0.5, 1, 0.05, 10000),
}


def model_path(name: str) -> str:
    width, epochs, _, images = BUDGET[name]
    return os.path.join(OUT, f"{name}-w{width}-e{epochs}-n{images}-fashion-mnist-32.safetensors")


def train_one(name: str, train, test, threads: int) -> dict:
    width, epochs, lr, images = BUDGET[name]
    path = model_path(name)
    result_path = path + ".json"
    if os.path.exists(result_path):
        return json.load(open(result_path))
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_channels=3, width_mult=width, input_size=(32, 32))
    config = TrainConfig(epochs=epochs, batch_size=128, lr=lr, schedule="onecycle", seed=0)
    began = time.perf_counter()
    history = fit(model, train.subset(images, seed=0) if images < len(train) else train, config,
                  checkpoint_path=path + ".ckpt")
    seconds = time.perf_counter() - began
    metrics = evaluate(model, test)
    torchslim.save(model, path, data="fashion-mnist-32", train=config.to_dict(), top1=metrics["top1"])
    prof = profile_model(model, (3, 32, 32), path=path, batch_sizes=(1, 32), threads=threads, per_layer=False)
    result = {"model": name, "width_mult": width, "epochs": epochs, "lr": lr, "images": images,
              "top1": metrics["top1"],
              "top5": metrics["top5"], "params": prof.params, "macs": prof.macs, "size_bytes": prof.size_bytes,
              "latency_b1_ms": prof.batch_latency_ms[1], "latency_b32_ms": prof.batch_latency_ms[32],
              "threads": prof.threads, "train_seconds": seconds,
              "train_seconds_per_epoch": sum(e["seconds"] for e in history["epochs"]) / max(1, epochs)}
    atomic_write_text(result_path, json.dumps(result, indent=2))
    if os.path.exists(path + ".ckpt"):
        os.remove(path + ".ckpt")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUDGET), help="comma-separated subset of the zoo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="retrain models that already have results")
    args = parser.parse_args()
    names = args.models.split(",")
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train = load_dataset("fashion-mnist-32", "train")
    test = load_dataset("fashion-mnist-32", "test")
    if args.force:
        for name in names:
            if os.path.exists(model_path(name) + ".json"):
                os.remove(model_path(name) + ".json")
    results = []
    for name in BUDGET:
        if name in names or os.path.exists(model_path(name) + ".json"):
            results.append(train_one(name, train, test, args.threads))
            r = results[-1]
            print(f"{name}: top-1 {r['top1']:.4f}, {r['params']:,} params, {r['macs']:,} MACs, "
                  f"{r['latency_b1_ms']:.2f} ms", flush=True)
    rows = [[r["model"], r["width_mult"], r["epochs"], f"{r['images']:,}", f"{r['top1']:.4f}", f"{r['params']:,}", f"{r['macs']:,}",
             f"{r['size_bytes']:,}", f"{r['latency_b1_ms']:.2f}", f"{r['latency_b32_ms']:.1f}",
             f"{r['train_seconds']:.0f}"] for r in results]
    body = "\n".join([
        "## Baselines: the zoo on fashion-mnist-32",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        "Budget: a class-balanced subset of the 60k training images (column `train images`), batch 128, SGD (momentum 0.9, nesterov, weight decay 5e-4), "
        "one-cycle schedule, random crop and flip; top-1 on the 10k test images. "
        f"Latency: median of 30 runs after warm-up at {args.threads} threads.",
        "",
        markdown_table(["model", "width", "epochs", "train images", "top-1", "params", "MACs", "file bytes", "ms batch 1",
                        "ms batch 32", "train s"], rows),
        "",
        "Rows of models not trained by this command are the cached results of earlier runs of this script "
        "with the same budget (benchmarks/out/*.json).",
        "",
        "Reference points (Zalando's Fashion-MNIST benchmark): 2-conv nets 0.876-0.925, ResNet-18 0.949.",
    ])
    write_section("baselines", body)


if __name__ == "__main__":
    main()
