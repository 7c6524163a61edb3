"""Binary kernels against float32 and int8 on this CPU, all interleaved in one run.

    python benchmarks/kernels_binary.py [--width 1.0] [--threads 1,2] [--repeats 30]

1. Per-layer: a binary 3x3 conv (1-bit x 1-bit, and 1-bit weights x 2-bit HWGQ
   activations) against torch's float32 conv of the same shape, batch 1.
2. End to end: vgg14 quantized with XNOR (1-bit activations) and with HWGQ + BWN
   (2-bit activations), first and last layers float, compiled with
   torchslim.deploy.compile (consecutive binary layers chained: activations stay
   packed between them), against eager torch float32, ONNX Runtime float32 and
   ONNX Runtime static int8 (QDQ, per-channel) of the same network, batch 1.
Weights are random: speed does not depend on their values.  The machine's load
average is recorded before and after: 2-thread rows on a 2-core machine mean
little when other jobs hold the cores.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from common import command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, isa
from torchslim.deploy.bench import bench_model
from torchslim.profile import compare_latency
from torchslim.quant import QuantConfig, freeze, quantize

LAYERS = [(256, 256, 8), (128, 128, 16), (512, 512, 4), (64, 64, 32)]


def layer_rows(threads: int, repeats: int) -> list[list]:
    rows = []
    for c, oc, size in LAYERS:
        codes = torch.where(torch.rand(oc, c, 3, 3) < 0.5, -1, 1).to(torch.int8)
        scale, bias = torch.rand(oc), torch.randn(oc)
        contenders = {"float": nn.Conv2d(c, oc, 3, padding=1),
                      "1x1 bit": PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, [-1.0, 1.0]),
                      "1x2 bit": PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, [0.0, 0.5, 1.0, 1.5])}
        for module in contenders.values():
            if isinstance(module, PackedBinaryConv2d):
                module.threads = threads
        t = compare_latency(contenders, (c, size, size), 1, threads, repeats=repeats)
        f = t["float"]["median_ms"]
        rows.append([f"{c}->{oc} @ {size}x{size}", threads, f"{f:.3f}", f"{t['1x1 bit']['median_ms']:.3f}",
                     f"**{f / t['1x1 bit']['median_ms']:.1f}x**", f"{t['1x2 bit']['median_ms']:.3f}",
                     f"**{f / t['1x2 bit']['median_ms']:.1f}x**"])
    return rows


def network_rows(width: float, threads: tuple, repeats: int) -> list[list]:
    rows = []
    for method in ("xnor", "hwgq-bwn"):
        torch.manual_seed(0)
        model = freeze(quantize(models.create("vgg14", width_mult=width), QuantConfig(method=method)).eval())
        result = bench_model(model, (3, 32, 32), (1,), threads, repeats, per_layer=False)
        for run in result["runs"]:
            ort_f, ort_q, binary = run["float_ort_ms"], run["int8_ort_ms"], run["binary_ms"]
            rows.append([f"vgg14 w{width} {method}", run["threads"], f"{run['float_eager_ms']:.2f}", f"{ort_f:.2f}",
                         f"{ort_q:.2f}", f"{binary:.2f}", f"**{ort_f / binary:.2f}x**", f"**{ort_q / binary:.2f}x**",
                         f"{result['memory']['ratio']:.1f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    load_before = os.getloadavg()[0]
    layers = [row for t in threads for row in layer_rows(t, args.repeats)]
    network = network_rows(args.width, threads, args.repeats)
    load_after = os.getloadavg()[0]
    body = "\n".join([
        "## Binary kernels: bit-packed conv against float32 and int8 (batch 1)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; kernel ISA: {isa()}  ",
        f"Medians of {args.repeats} interleaved runs; every ratio compares rows of the same run.  "
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs.",
        "",
        "Per layer, 3x3 conv, stride 1, padding 1 (targets: 1-bit >= 8x, 1x2-bit >= 4x over float32):",
        "",
        markdown_table(["layer", "threads", "torch f32 ms", "1x1-bit ms", "speed-up", "1x2-bit ms", "speed-up"],
                       layers),
        "",
        "End to end, float first and last layers (targets: >= 4x over ORT float32, >= 2x over ORT int8):",
        "",
        markdown_table(["network", "threads", "torch f32 ms", "ORT f32 ms", "ORT int8 ms", "binary ms",
                        "vs ORT f32", "vs ORT int8", "weights in RAM"], network),
    ])
    write_section("kernels-binary", body)
    print(body)


if __name__ == "__main__":
    main()
