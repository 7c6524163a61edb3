"""Q-CNN against plain PQ at the same bits: vgg14 (width 0.25) convs + FC, lenet300 FCs.

    python benchmarks/backend_qcnn.py [--threads 1]

Both methods use the same codebook shape (``subvector`` input channels per
sub-vector, ``2**bits`` codewords per subspace, so ``bits / subvector`` bits
per weight plus the codebooks).  ``pq`` runs k-means on the weight sub-vectors;
``qcnn`` starts there and minimises each layer's output error on 256
calibration images from the training split, layer by layer with error
correction.  No fine-tuning: the numbers compare the quantizers alone.
Relative output error ``||y_q - y||^2 / ||y||^2`` is measured per layer inside
the full network on 256 *test* images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.codebook import PQConfig, calibration_batch, layer_output_errors, product_quantize
from torchslim.data import load_dataset
from torchslim.export import packed_size
from torchslim.profile import serialized_size
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
SETTINGS = [(4, 4), (4, 6), (2, 4)]  # (subvector, bits): 1, 1.5 and 2 bits per weight


def vgg_base(train):
    """vgg14 width 0.25: benchmarks/baselines.py's model when present, else a shorter run of our own."""
    try:
        from baselines import model_path

        if os.path.exists(model_path("vgg14")):
            return torchslim.load(model_path("vgg14")), f"{os.path.basename(model_path('vgg14'))} (baselines.py)"
    except ImportError:
        pass
    path = os.path.join(OUT, "backend-base-vgg14-w0.25-n20000-e4-fashion-mnist-32.safetensors")
    if not os.path.exists(path):
        torch.manual_seed(0)
        model = models.create("vgg14", num_classes=10, width_mult=0.25)
        fit(model, train.subset(20000), TrainConfig(epochs=4, lr=0.05, batch_size=128), progress=False)
        torchslim.save(model.eval(), path, input_shape=(3, 32, 32))
    return torchslim.load(path), os.path.basename(path) + " (20k images, 4 epochs)"


def lenet_base(train):
    path = os.path.join(OUT, "backend-base-lenet300-e8-fashion-mnist.safetensors")
    if not os.path.exists(path):
        torch.manual_seed(0)
        model = models.create("lenet300", num_classes=10)
        fit(model, train, TrainConfig(epochs=8, lr=0.05, batch_size=128), progress=False)
        torchslim.save(model.eval(), path, input_shape=(1, 28, 28))
    return torchslim.load(path), os.path.basename(path)


def compare(name, model, train, test, images):
    rows, layer_rows = [], {}
    float_bytes = serialized_size(model)
    base_top1 = evaluate(model, test)["top1"]
    rows.append([name, "float", "32", f"{base_top1:.4f}", "", f"{float_bytes:,}", "1.0x", ""])
    for subvector, bits in SETTINGS:
        for method in ("pq", "qcnn"):
            began = time.perf_counter()
            quantized = product_quantize(model, PQConfig(subvector=subvector, bits=bits, method=method,
                                                         calib_samples=256), train)
            seconds = time.perf_counter() - began
            paths = [p for p, m in quantized.named_modules() if type(m).__name__.startswith("PQ")]
            errors = layer_output_errors(model, quantized, paths, images)
            size = packed_size(quantized)
            rows.append([name, method, f"{bits / subvector:g} (d={subvector}, K={2 ** bits})",
                         f"{evaluate(quantized, test)['top1']:.4f}", f"{statistics.mean(errors.values()):.4f}",
                         f"{size:,}", f"{float_bytes / size:.1f}x", f"{seconds:.0f}"])
            if (subvector, bits) == SETTINGS[0]:
                for path, error in errors.items():
                    layer_rows.setdefault(path, [name, path]).append(f"{error:.4f}")
        skipped = quantized.torchslim_meta["pq_skipped"]
    return rows, list(layer_rows.values()), skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    body = ["## Back-end: Q-CNN against PQ at the same bits", "", f"Command: `{command_line()}`", "",
            f"Hardware: {hardware()}", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    rows, layer_rows, notes = [], [], []
    for name, loader, data in (("vgg14", vgg_base, "fashion-mnist-32"), ("lenet300", lenet_base, "fashion-mnist")):
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        model, source = loader(train)
        images = calibration_batch(test, 256, seed=1)
        more, layers, skipped = compare(name, model, train, test, images)
        rows += more
        layer_rows += layers
        notes.append(f"- {name}: base `{source}`; left float: "
                     + (", ".join(f"`{p}` ({r})" for p, r in skipped.items()) or "none"))
        print("\n".join(" | ".join(r) for r in more), flush=True)
    body += notes + ["", markdown_table(["model", "method", "bits/weight", "top-1", "mean layer output error",
                                         "packed bytes", "ratio", "seconds"], rows), "",
                     f"Per-layer relative output error at {SETTINGS[0][1] / SETTINGS[0][0]:g} bit/weight "
                     "(PQ, then Q-CNN):", "",
                     markdown_table(["model", "layer", "pq", "qcnn"], layer_rows)]
    write_section("backend-qcnn", "\n".join(body))


if __name__ == "__main__":
    main()
