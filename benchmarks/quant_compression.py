"""Compression of binary VGG14 by the packed file: float file bytes over packed file bytes.

    python benchmarks/quant_compression.py

File sizes depend on the architecture, not on the weights' values, so the full-width
VGG14 of the paper (9.4M parameters) is measured untrained: HWGQ + BWN, first and last
layers float, every BN folded into the binary layers' scale and bias.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.quant import FrozenConv2d, FrozenLinear, QuantConfig, freeze, quantize
from torchslim.quant.packed import save_packed


def main():
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
                sizes = {dt: save_packed(frozen, os.path.join(folder, f"{dt}.packed"), float_dtype=dt)
                         for dt in ("float32", "float16")}
                rows.append([name, width, f"{sum(p.numel() for p in model.parameters()):,}", float_bytes,
                             f"{binary / 8:,.0f}", sizes["float32"], f"{float_bytes / sizes['float32']:.2f}x",
                             sizes["float16"], f"{float_bytes / sizes['float16']:.2f}x"])
    body = f"""## Quantization: packed-file compression (HWGQ + BWN)

Command: `{command_line()}`
Hardware: {hardware()}

"bits only" is the binary weights at 1 bit each, the floor the ratio approaches (32x for
an all-binary net). The rest of a packed file is the float first and last layers, one
scale and one bias per binary output channel (BN folded in), the activation levels and
the JSON header that rebuilds the model.

{markdown_table(["model", "width", "params", "float file", "bits only", "packed (f32 side)", "ratio",
                 "packed (f16 side)", "ratio"], rows)}
"""
    print(body)
    write_section("quant-compression", body)


if __name__ == "__main__":
    main()
