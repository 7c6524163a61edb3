"""Static int8 against float32 on this CPU: PyTorch x86 and ONNX Runtime QDQ, timed interleaved.

    python benchmarks/quant_int8.py [--width 0.25] [--threads 1] [--repeats 30]

At width 0.25 it uses the trained float vgg14 of benchmarks/quant_table4.py (or
baselines.py) when present; otherwise (and at any other width) an untrained vgg14, whose
latency is the same (top-1 is then omitted).
Calibration: 512 training images.  Top-1 on the full 10k test set.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import load_dataset
from torchslim.profile import compare_latency
from torchslim.data.calibration import calibration_images
from torchslim.quant.int8 import OnnxModel, export_dynamic_batch_onnx, quantize_int8
from torchslim.train import evaluate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    found = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "out", "*vgg14-w0.25*.safetensors")))
    found = found if args.width == 0.25 else []
    model = torchslim.load(found[0]) if found else models.create("vgg14", width_mult=args.width).eval()
    source = os.path.basename(found[0]) if found else f"untrained vgg14 width {args.width}"
    train, test = load_dataset("fashion-mnist-32", "train"), load_dataset("fashion-mnist-32", "test")
    batches = calibration_images(train, 512)
    shape = (3, 32, 32)
    with tempfile.TemporaryDirectory() as folder:
        candidates = {
            "torch float32": model,
            "ORT float32": OnnxModel(export_dynamic_batch_onnx(model, os.path.join(folder, "f.onnx"), shape),
                                     args.threads),
            "ORT int8 (QDQ)": OnnxModel(quantize_int8(model, batches, shape, path=os.path.join(folder, "q.onnx")).path,
                                        args.threads),
            "torch int8 (x86)": quantize_int8(model, batches, shape, backend="torch"),
        }
        sizes = {"ORT float32": os.path.getsize(os.path.join(folder, "f.onnx")),
                 "ORT int8 (QDQ)": os.path.getsize(os.path.join(folder, "q.onnx"))}
        top1 = {name: evaluate(m, test)["top1"] for name, m in candidates.items()} if found else {}
        timings = {b: compare_latency(candidates, shape, batch_size=b, threads=args.threads, repeats=args.repeats)
                   for b in (1, 32)}
    base = {b: timings[b]["torch float32"]["median_ms"] for b in (1, 32)}
    rows = [[name, f"{top1[name]:.4f}" if top1 else "-", sizes.get(name, "-"),
             f"{timings[1][name]['median_ms']:.2f}", f"{base[1] / timings[1][name]['median_ms']:.2f}x",
             f"{timings[32][name]['median_ms']:.1f}", f"{base[32] / timings[32][name]['median_ms']:.2f}x"]
            for name in candidates]
    ort = {b: timings[b]["ORT float32"]["median_ms"] / timings[b]["ORT int8 (QDQ)"]["median_ms"] for b in (1, 32)}
    body = f"""## Quantization: static int8 on CPU (vgg14 width {args.width}, fashion-mnist-32)

Command: `{command_line()}`
Hardware: {hardware()}
Model: {source}. Calibration: 512 training images, per-channel int8 weights, MinMax activations.
Latency: median of {args.repeats} interleaved runs per model, {args.threads} thread(s), same run for all rows.

{markdown_table(["runtime", "top-1", "file bytes", "batch 1 ms", "speed-up", "batch 32 ms", "speed-up"], rows)}

ONNX Runtime int8 over ONNX Runtime float32: {ort[1]:.2f}x at batch 1, {ort[32]:.2f}x at batch 32.
"""
    print(body)
    write_section(f"quant-int8-w{args.width}", body)


if __name__ == "__main__":
    main()
