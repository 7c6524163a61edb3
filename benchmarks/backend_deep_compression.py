"""The Deep Compression pipeline (prune -> k-means weight sharing -> Huffman) on LeNets.

    python benchmarks/backend_deep_compression.py [--models lenet300,lenet5] [--threads 1]

For each model on Fashion-MNIST (28x28): train a float base (or reuse it from
benchmarks/out/), prune per layer with the AGP schedule while fine-tuning, fold
BatchNorm into the pruned layers (a row scaling: zeros stay zeros), share weights with k-means (5-bit FC, 6-bit conv
codebooks, linear init) and fine-tune the centroids, then Huffman-code the codes
and the relative indices.  Each stage reports top-1 on the 10k test images and
the bytes of its packed file; the ratio is against the float32 file of the base
model (torchslim.save).  "payload" is the tensor bytes alone (the container's
JSON header excluded), which is what the paper's ratios count.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.codebook import WeightShareConfig, weight_share
from torchslim.data import load_dataset
from torchslim.export import PackOptions, pack_model
from torchslim.export.fold import fold_batchnorm
from torchslim.profile import serialized_size
from torchslim.sparse import SparsityConfig, sparsify, sparsity_report
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")

# base epochs, per-layer sparsity, AGP fine-tune epochs, centroid fine-tune epochs
PLAN = {
    "lenet300": (8, {"classifier.0": 0.95, "classifier.3": 0.9, "classifier.6": 0.7}, 8, 2),
    "lenet5": (6, {"features.0": 0.3, "features.4": 0.8, "classifier.0": 0.96, "classifier.3": 0.9,
                   "classifier.6": 0.7}, 10, 2),
}


def base_model(name, train, epochs):
    path = os.path.join(OUT, f"backend-base-{name}-e{epochs}-noaug-fashion-mnist.safetensors")
    if os.path.exists(path):
        return torchslim.load(path), 0.0
    torch.manual_seed(0)
    model = models.create(name, num_classes=10)
    began = time.perf_counter()
    fit(model, train, TrainConfig(epochs=epochs, lr=0.05, batch_size=128, augment=False), progress=False)
    seconds = time.perf_counter() - began
    torchslim.save(model.eval(), path, input_shape=(1, 28, 28))
    return torchslim.load(path), seconds


def payload_bytes(data: bytes) -> int:
    return len(data) - 8 - int.from_bytes(data[:8], "little")


def row(stage, model, test, baseline, huffman=False):
    result = _row(stage, model, test, baseline, huffman)
    print(" | ".join(result[0]), flush=True)
    return result


def _row(stage, model, test, baseline, huffman=False):
    data = pack_model(model, PackOptions(huffman=huffman))
    top1 = evaluate(model, test)["top1"]
    sparsity = sparsity_report(model)["sparsity"]
    return [stage, f"{top1:.4f}", f"{sparsity:.1%}", f"{len(data):,}", f"{baseline / len(data):.1f}x",
            f"{payload_bytes(data):,}", f"{baseline / payload_bytes(data):.1f}x"], top1, len(data)


def run_model(name, train, test):
    epochs, layer_sparsity, prune_epochs, centroid_epochs = PLAN[name]
    base, train_seconds = base_model(name, train, epochs)
    baseline = serialized_size(base)
    rows = []
    r, base_top1, _ = row("float base (BatchNorm)", base, test, baseline)
    rows.append(r)
    began = time.perf_counter()
    pruned = sparsify(base, SparsityConfig(layer_sparsity=layer_sparsity, schedule="agp", agp_every=100),
                      train, TrainConfig(epochs=prune_epochs, lr=0.01, schedule="cosine", weight_decay=5e-5,
                                         augment=False), progress=False)
    rows.append(row(f"pruned (AGP, {prune_epochs} epochs)", pruned, test, baseline)[0])
    pruned = fold_batchnorm(pruned)  # row scaling: the zeros stay zeros
    rows.append(row("BatchNorm folded", pruned, test, baseline)[0])
    shared = weight_share(pruned, WeightShareConfig(bits=5, conv_bits=6, init="linear"))
    rows.append(row("k-means 5-bit FC / 6-bit conv", shared, test, baseline)[0])
    fit(shared, train, TrainConfig(epochs=centroid_epochs, lr=1e-4, optimizer="adam", schedule="cosine",
                                   weight_decay=0.0, augment=False), progress=False)
    shared.eval()
    rows.append(row(f"+ centroid fine-tune ({centroid_epochs} epochs)", shared, test, baseline)[0])
    final, final_top1, final_size = row("+ Huffman coding", shared, test, baseline, huffman=True)
    rows.append(final)
    seconds = time.perf_counter() - began
    torchslim.save(shared, os.path.join(OUT, f"backend-deep-compression-{name}.safetensors"), input_shape=(1, 28, 28))
    summary = (f"**{name}**: {baseline:,} B float32 file -> {final_size:,} B packed, "
               f"**{baseline / final_size:.1f}x**, top-1 {base_top1:.4f} -> {final_top1:.4f} "
               f"({100 * (final_top1 - base_top1):+.2f} points). Base training {epochs} epochs"
               f"{f' ({train_seconds:.0f} s)' if train_seconds else ' (reused)'}; compression {seconds:.0f} s.")
    return summary, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    body = ["## Back-end: the Deep Compression pipeline on LeNets (Fashion-MNIST)", "",
            f"Command: `{command_line()}`", "", f"Hardware: {hardware()}", "",
            "No augmentation. Per-layer sparsity with the AGP schedule, k-means weight sharing "
            "(linear init), centroid fine-tune "
            "(Adam 1e-4), Huffman coding of codes and relative indices.  BatchNorm is folded into the "
            "pruned layers before weight sharing (the deployed form).  Ratios are against the float32 "
            "`torchslim.save` file of the base model; "
            "*payload* counts tensor bytes only (no JSON header), as the paper's ratios do.  Target: >= 40x at "
            "<= 0.5 points lost.", ""]
    for name in args.models.split(","):
        summary, rows = run_model(name, train, test)
        body += [summary, "", markdown_table(["stage", "top-1", "sparsity", "file bytes", "ratio", "payload bytes",
                                              "payload ratio"], rows), ""]
        print(summary, flush=True)
    write_section("backend-deep-compression", "\n".join(body))


if __name__ == "__main__":
    main()
