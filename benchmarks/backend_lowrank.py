"""Low-rank factorisation at two MAC targets: vgg14 (width 0.25) and lenet300.

    python benchmarks/backend_lowrank.py [--threads 1] [--finetune-epochs 1]

vgg14: spatial SVD (``svd``) and Tucker-2 (``tucker``) of the 3x3 convs plus SVD
of the FC, ranks from one energy level searched to meet 50% and 30% of the
MACs, then a short fine-tune (SGD, cosine, lr 0.01) on 8k training images.
lenet300: truncated SVD of the FCs at the same targets, fine-tuned on the full
training set.  Latency is the median of interleaved runs (base and factorised
models alternating) at batch 1 and 32, from the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from backend_qcnn import lenet_base, vgg_base
from common import command_line, hardware, markdown_table, write_section

from torchslim.data import load_dataset
from torchslim.lowrank import LowRankConfig, factorize
from torchslim.profile import compare_latency, count_macs, count_params
from torchslim.train import TrainConfig, evaluate, fit

TARGETS = (0.5, 0.3)


def run(name, model, methods, train, test, input_shape, epochs, threads):
    variants = {"base": (model, None, None)}
    for method in methods:
        for target in TARGETS:
            began = time.perf_counter()
            factored = factorize(model, LowRankConfig(method=method, target_macs=target), input_shape=input_shape)
            top1_before = evaluate(factored, test)["top1"]
            fit(factored, train, TrainConfig(epochs=epochs, lr=0.01, schedule="cosine", batch_size=128),
                progress=False)
            variants[f"{method} @ {target:.0%} MACs"] = (factored.eval(), top1_before, time.perf_counter() - began)
    nets = {k: v[0] for k, v in variants.items()}
    lat1 = compare_latency(nets, input_shape, batch_size=1, threads=threads, repeats=60)
    lat32 = compare_latency(nets, input_shape, batch_size=32, threads=threads, repeats=15)
    base_macs = count_macs(model, input_shape)
    rows = []
    for key, (net, top1_before, seconds) in variants.items():
        macs = count_macs(net, input_shape)
        rows.append([name, key, f"{macs:,}", f"{macs / base_macs:.2f}", f"{count_params(net):,}",
                     "" if top1_before is None else f"{top1_before:.4f}", f"{evaluate(net, test)['top1']:.4f}",
                     f"{lat1[key]['median_ms']:.3f}", f"{lat1['base']['median_ms'] / lat1[key]['median_ms']:.2f}x",
                     f"{lat32[key]['median_ms']:.2f}", f"{lat32['base']['median_ms'] / lat32[key]['median_ms']:.2f}x"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, notes = [], []
    for name, loader, data, methods, shape, subset in (
            ("vgg14", vgg_base, "fashion-mnist-32", ("svd", "tucker"), (3, 32, 32), 8000),
            ("lenet300", lenet_base, "fashion-mnist", ("svd",), (1, 28, 28), None)):
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        model, source = loader(train)
        notes.append(f"- {name}: base `{source}`")
        fine_tune_set = train.subset(subset) if subset else train
        more = run(name, model, methods, fine_tune_set, test, shape, args.finetune_epochs, args.threads)
        print("\n".join(" | ".join(r) for r in more), flush=True)
        rows += more
    body = ["## Back-end: low-rank factorisation", "", f"Command: `{command_line()}`", "", f"Hardware: {hardware()}",
            "", __doc__.split("\n\n", 2)[2].strip(), f"Fine-tune: {args.finetune_epochs} epoch(s).", ""] + notes + [
        "", markdown_table(["model", "variant", "MACs", "MAC ratio", "params", "top-1 before fine-tune",
                            "top-1", "batch-1 ms", "speed-up", "batch-32 ms", "speed-up"], rows)]
    write_section("backend-lowrank", "\n".join(body))


if __name__ == "__main__":
    main()
