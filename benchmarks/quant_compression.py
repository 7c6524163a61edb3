"""Compression of binary VGG14 by the packed file: float file bytes over packed file bytes.

    python benchmarks/quant_compression.py

File sizes depend on the architecture, not on the weights' values, so the full-width
VGG14 of the paper (9.4M parameters) is measured untrained: HWGQ + BWN, first and last
layers float, every BN folded into the binary layers' scale and bias.  The storage variants
that are not exact (float16, int8 per-channel side data) are also applied to a trained
model (the shared width-0.25 base, quantized, calibrated and set by the alternating update
on 512 training images) to measure what they cost in top-1.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.quant import FrozenConv2d, FrozenLinear, QuantConfig, freeze, quantize
from torchslim.data import load_dataset
from torchslim.quant.altupdate import alternating_update
from torchslim.data.calibration import calibration_images
from torchslim.quant.calibrate import calibrate_act_scales
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.train import evaluate

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "shared",
                    "base-vgg14-w0.25-e10-fashion-mnist-32.safetensors")
# (float first/last layers and BN, per-channel scale and bias of the binary layers)
VARIANTS = (("float32", "float32"), ("float32", "int8"), ("float16", "float16"))


def storage_top1(folder) -> list[list]:
    """Top-1 on the 10k test images of one trained quantized model stored in each variant."""
    base = torchslim.load(BASE)
    batches = calibration_images(load_dataset("fashion-mnist-32", "train", subset=512), 512)
    model = quantize(base, QuantConfig(method="hwgq-zero-uniform-bwn", act_bits=2))
    calibrate_act_scales(model, batches)
    model, _ = alternating_update(model, batches, reference=base)
    frozen, test = freeze(model), load_dataset("fashion-mnist-32", "test")
    rows = [["frozen model (no file)", "-", f"{evaluate(frozen, test)['top1']:.4f}"]]
    for float_dtype, side_dtype in VARIANTS:
        path = os.path.join(folder, "trained.packed")
        size = save_frozen(frozen, path, float_dtype=float_dtype, side_dtype=side_dtype)
        rows.append([f"{float_dtype} / {side_dtype}", size, f"{evaluate(load_frozen(path), test)['top1']:.4f}"])
    return rows


def main():
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in ("vgg14", "binary_vgg14", "binary_resnet20"):
            for width in (1.0, 0.25):
                torch.manual_seed(0)
                model = models.create(name, width_mult=width).eval()
                float_path = os.path.join(folder, "float.safetensors")
                torchslim.save(model, float_path)
                float_bytes = os.path.getsize(float_path)
                frozen = freeze(quantize(model, QuantConfig(method="hwgq-bwn")))
                binary = sum(m.codes.numel() for m in frozen.modules() if isinstance(m, (FrozenConv2d, FrozenLinear)))
                sizes = [save_frozen(frozen, os.path.join(folder, "model.packed"), float_dtype=f, side_dtype=d)
                         for f, d in VARIANTS]
                rows.append([name, width, f"{sum(p.numel() for p in model.parameters()):,}", float_bytes,
                             f"{binary / 8:,.0f}"] + [cell for size in sizes
                                                      for cell in (size, f"{float_bytes / size:.2f}x")])
        trained = storage_top1(folder)
    body = f"""## Quantization: packed-file compression (HWGQ + BWN)

Command: `{command_line()}`
Hardware: {hardware()}

"bits only" is the binary weights at 1 bit each, the floor the ratio approaches (32x for
an all-binary net). The rest of a packed file is the float first and last layers, one
scale and one bias per binary output channel (BN folded in), the activation levels and
the (zlib-compressed) JSON header that rebuilds the model.  Columns name the storage as
"first/last layers / per-channel side data": float32 / float32 is exact (the packed model
computes what the frozen model computes); float32 / int8 keeps the first and last layers in
float32 and stores each binary layer's scale and bias as int8 with one float32 step each;
float16 / float16 halves every float.

{markdown_table(["model", "width", "params", "float file", "bits only", "f32 / f32", "ratio",
                 "f32 / int8 side", "ratio", "f16 / f16", "ratio"], rows)}

What the inexact variants cost: one trained vgg14 width 0.25 (the shared base, HWGQ-zero-uniform
+ BWN, calibrated and set by the alternating update on 512 training images, not fine-tuned),
top-1 on the 10k fashion-mnist-32 test images:

{markdown_table(["storage (first/last / side)", "file bytes", "top-1"], trained)}
"""
    print(body)
    write_section("quant-compression", body)


if __name__ == "__main__":
    main()
