"""Binary kernels against float32 and int8 on this CPU, all interleaved in one run.

    python benchmarks/kernels_binary.py [--width 1.0] [--threads 1,2] [--repeats 30]

1. Per-layer: a binary 3x3 conv against torch's float32 conv of the same shape,
   batch 1: 1-bit x 1-bit; 1-bit weights x 2-bit HWGQ activations (Lloyd levels,
   not evenly spaced: 3 thermometer planes); 1-bit weights x 2- and 3-bit evenly
   spaced activations (DoReFa levels: 2 and 3 binary-weighted planes).
2. End to end: vgg14 quantized with XNOR (1-bit activations), HWGQ + BWN (2-bit
   HWGQ activations: 3 thermometer planes) and HWGQ + BWN with the zero-anchored
   uniform levels (2 binary-weighted planes), first and
   last layers float, compiled with torchslim.deploy.compile (consecutive binary
   layers chained: activations stay packed between them), against eager torch
   float32, ONNX Runtime float32 and ONNX Runtime static int8 (QDQ, per-channel)
   of the same network, batch 1.
Runtimes alternate in blocks of consecutive calls (torchslim.deploy.bench.compare_blocks),
so one runtime's spinning threads do not slow the next.  Weights are random: speed
does not depend on their values.  The machine's load average is recorded before and
after: 2-thread rows on a 2-core machine mean little when other jobs hold the cores.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from common import command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, isa
from torchslim.deploy.bench import bench_model, compare_blocks
from torchslim.quant import QuantConfig, freeze, quantize
from torchslim.quant.modules import ActQuant

LAYERS = [(256, 256, 8), (128, 128, 16), (512, 512, 4), (64, 64, 32)]
# binary layer kinds: activation levels (weights are 1-bit in all of them)
KINDS = {"1x1": [-1.0, 1.0],
         "1x2 HWGQ": [float(v) for v in ActQuant("hwgq", 2).levels],  # 3 thermometer planes
         "1x2 even": [float(v) for v in ActQuant("dorefa", 2).levels],  # 2 binary-weighted planes
         "1x3 even": [float(v) for v in ActQuant("dorefa", 3).levels]}  # 3 binary-weighted planes


BUSY = ("  **Other jobs shared the machine during this run** (load above half the CPU count): every "
        "runtime ran slower than on a quiet machine, torch's float convs most (its OpenMP threads wait at a "
        "barrier for a descheduled thread, which is why its 2-thread rows collapse), so the ratios are not a quiet "
        "machine's, and 2-thread rows mostly show how each runtime copes with a busy second core.")


def layer_rows(threads: int, repeats: int) -> list[list]:
    rows = []
    for c, oc, size in LAYERS:
        codes = torch.where(torch.rand(oc, c, 3, 3) < 0.5, -1, 1).to(torch.int8)
        scale, bias = torch.rand(oc), torch.randn(oc)
        contenders = {"float": nn.Conv2d(c, oc, 3, padding=1)}
        for kind, levels in KINDS.items():
            contenders[kind] = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, levels)
            contenders[kind].threads = threads
        t = compare_blocks(contenders, (c, size, size), 1, threads, repeats=repeats)
        f = t["float"]["median_ms"]
        row = [f"{c}->{oc} @ {size}x{size}", threads, f"{f:.3f}"]
        for kind in KINDS:
            row += [f"{t[kind]['median_ms']:.3f}", f"**{f / t[kind]['median_ms']:.1f}x**"]
        rows.append(row)
    return rows


def network_rows(width: float, threads: tuple, repeats: int) -> list[list]:
    rows = []
    for method in ("xnor", "hwgq-bwn", "hwgq-zero-uniform-bwn"):
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
        (f"Medians of {args.repeats} runs per contender, interleaved in blocks of 5, each block after a 50 ms "
         f"pause (torch's OpenMP workers spin 10-20 ms after a region and would hold the core the next runtime "
         f"needs) and 30 ms of untimed calls (an idle core starts slow); every ratio compares rows of the same run.  Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on "
         f"{os.cpu_count()} CPUs.{BUSY if max(load_before, load_after) > os.cpu_count() / 2 else ''}"),
        "",
        ("Per layer, 3x3 conv, stride 1, padding 1, float input and output (targets: 1-bit >= 8x, 1x2-bit >= 4x "
         "over float32).  Weights 1-bit; activations: 1x1 sign; 1x2 HWGQ Lloyd levels (0, 0.318, 1.0, 1.894), "
         "3 thermometer planes; 1x2 / 1x3 even: levels D * {0..2^k-1} (DoReFa's here; the zero-anchored uniform "
         "HWGQ levels run the same code), k binary-weighted planes:"),
        "",
        markdown_table(["layer", "threads", "torch f32 ms"] + [h for kind in KINDS for h in (f"{kind} ms", "speed-up")],
                       layers),
        "",
        ("End to end, float first and last layers (targets: >= 4x over ORT float32, >= 2x over ORT int8); "
         "the compiled model runs its float layers on 1 torch thread and its packed kernels on the row's threads:"),
        "",
        markdown_table(["network", "threads", "torch f32 ms", "ORT f32 ms", "ORT int8 ms", "binary ms",
                        "vs ORT f32", "vs ORT int8", "weights in RAM"], network),
    ])
    write_section("kernels-binary", body)
    print(body)


if __name__ == "__main__":
    main()
