"""KD-assisted pruning fine-tune: the unpruned model as teacher against plain fine-tuning, same budget.

    python benchmarks/distill_prune.py [--target-macs 0.33] [--subset 5000] [--epochs 2] [--threads 1]

The teacher is the vgg14 (width 0.25) that benchmarks/distill_students.py uses.
It is pruned once (L1, global scope) to ``--target-macs`` of its MACs; the same
pruned network is then fine-tuned twice on a class-balanced subset with the
same seed and schedule: once with cross-entropy, once with the unpruned model
as a frozen teacher through ``torchslim.distill.kd_loss_fn`` (each loss in turn).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from common import command_line, hardware, markdown_table, write_section
from distill_students import get_teacher

from torchslim.data import load_dataset
from torchslim.distill import kd_loss_fn, list_losses
from torchslim.profile import count_macs
from torchslim.prune import PruneConfig, prune
from torchslim.train import TrainConfig, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-macs", type=float, default=0.33)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher-subset", type=int, default=20000)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_dataset("fashion-mnist-32", "train"), load_dataset("fashion-mnist-32", "test")
    teacher, info = get_teacher(args, train, test)
    example = torch.zeros(1, 3, 32, 32)
    pruned = prune(teacher, PruneConfig(criterion="l1", target_macs=args.target_macs, scope="global"),
                   example_inputs=example).model
    macs = (count_macs(teacher, (3, 32, 32)), count_macs(pruned, (3, 32, 32)))
    rows = [["unpruned teacher", f"{macs[0]:,}", f"{info['top1']:.4f}", ""],
            ["pruned, no fine-tune", f"{macs[1]:,}", f"{evaluate(pruned, test)['top1']:.4f}", ""]]
    data = train.subset(args.subset)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.01, schedule="cosine", seed=0)
    alone_top1 = None
    for label in ["cross-entropy", *list_losses()]:
        model = copy.deepcopy(pruned)
        loss_fn = None if label == "cross-entropy" else kd_loss_fn(copy.deepcopy(teacher), loss=label)
        began = time.perf_counter()
        fit(model, data, config, loss_fn=loss_fn, progress=False)
        top1 = evaluate(model, test)["top1"]
        alone_top1 = top1 if alone_top1 is None else alone_top1
        gain = "" if label == "cross-entropy" else f"{100 * (top1 - alone_top1):+.2f}"
        rows.append([f"fine-tune, {label}" + ("" if label == "cross-entropy" else " KD"), f"{macs[1]:,}",
                     f"{top1:.4f}", gain])
        print(f"{label}: top-1 {top1:.4f} ({time.perf_counter() - began:.0f} s)", flush=True)
    body = "\n".join([
        "## Distillation: KD-assisted pruning fine-tune (fashion-mnist-32)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Teacher and starting point: `{info['path']}` ({info['budget']}). Pruned once with L1 filter norms, "
        f"global scope, to {args.target_macs:.0%} of its MACs. Fine-tune budget: {args.epochs} epochs on a "
        f"class-balanced {args.subset}-image subset, batch 128, SGD lr 0.01 cosine, crop and flip, seed 0, the "
        "same for every row; KD rows use the registry's default T and alpha per loss. Top-1 on the 10k test set.",
        "",
        markdown_table(["model", "MACs", "top-1", "points over plain fine-tune"], rows),
    ])
    write_section("distill-prune", body)


if __name__ == "__main__":
    main()
