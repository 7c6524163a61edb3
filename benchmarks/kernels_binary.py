"""Binary kernels against float32 and int8 on this CPU, all interleaved in one run.

    python benchmarks/kernels_binary.py [--width 1.0] [--threads 1,2] [--repeats 30] [--runs 3]

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
does not depend on their values.  The CPU time other processes took during the run is
recorded: 2-thread rows on a 2-core machine mean little when other jobs hold the cores.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from common import OtherLoad, command_line, core_clock_ghz, hardware, markdown_table, write_section

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


BUSY = ("  **Other jobs shared the machine during this run** (more than a quarter of a core on average): every "
        "runtime ran slower than on a quiet machine, torch's float convs most (its OpenMP threads wait at a "
        "barrier for a descheduled thread, which is why its 2-thread rows collapse), so the ratios are not a quiet "
        "machine's, and 2-thread rows mostly show how each runtime copes with a busy second core.")


def layer_times(threads: int, repeats: int) -> dict:
    """{(layer, threads): {contender: median ms}} from one interleaved run."""
    times = {}
    for c, oc, size in LAYERS:
        torch.manual_seed(c)
        codes = torch.where(torch.rand(oc, c, 3, 3) < 0.5, -1, 1).to(torch.int8)
        scale, bias = torch.rand(oc), torch.randn(oc)
        contenders = {"float": nn.Conv2d(c, oc, 3, padding=1)}
        for kind, levels in KINDS.items():
            contenders[kind] = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, levels)
            contenders[kind].threads = threads
        t = compare_blocks(contenders, (c, size, size), 1, threads, repeats=repeats)
        times[(f"{c}->{oc} @ {size}x{size}", threads)] = {name: t[name]["median_ms"] for name in contenders}
    return times


def network_times(width: float, threads: tuple, repeats: int) -> tuple[dict, dict]:
    """{(network, threads): {runtime: median ms}} and {network: weight-memory ratio} from one run."""
    times, memory = {}, {}
    for method in ("xnor", "hwgq-bwn", "hwgq-zero-uniform-bwn"):
        torch.manual_seed(0)
        model = freeze(quantize(models.create("vgg14", width_mult=width), QuantConfig(method=method)).eval())
        result = bench_model(model, (3, 32, 32), (1,), threads, repeats, per_layer=False)
        name = f"vgg14 w{width} {method}"
        memory[name] = result["memory"]["ratio"]
        for run in result["runs"]:
            times[(name, run["threads"])] = {k: run[f"{k}_ms"] for k in ("float_eager", "float_ort", "int8_ort", "binary")}
    return times, memory


def _ratio(runs: list[dict], key, base: str, contender: str, digits: int) -> str:
    """The median over runs of base / contender, with the range when there are several runs."""
    ratios = sorted(run[key][base] / run[key][contender] for run in runs)
    text = f"**{statistics.median(ratios):.{digits}f}x**"
    return text + (f" ({ratios[0]:.{digits}f}-{ratios[-1]:.{digits}f})" if len(ratios) > 1 else "")


def _ms(runs: list[dict], key, contender: str, digits: int) -> str:
    return f"{statistics.median([run[key][contender] for run in runs]):.{digits}f}"


def _clock_note(clocks: list) -> str:
    """The core clock probe before each run: the host's state, which the load figure cannot see."""
    clocks = [c for c in clocks if c is not None]
    if not clocks:
        return ""
    return (f"  A dependent chain of 1-cycle integer adds, run before each run, ran at {min(clocks):.2f}-"
            f"{max(clocks):.2f} GHz.  On this shared host the same chain measured 1.9 and 2.8 GHz on a quiet guest "
            "at different times of one day, and between two quiet runs of this script that day torch's float "
            "256->256 @ 8x8 conv moved by 8% and the 1-bit kernel by 70% (the integer units seem to be shared "
            "with another guest), so ratios from runs at different clocks differ; `benchmarks/kernels_ab.py` "
            "compares kernel builds within one process instead.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3,
                        help="whole interleaved runs; tables give median ms and the median (min-max) ratio over runs")
    args = parser.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    layer_runs, network_runs, clocks = [], [], []
    with OtherLoad() as load:
        for _ in range(args.runs):
            clocks.append(core_clock_ghz())
            layer_runs.append({k: v for t in threads for k, v in layer_times(t, args.repeats).items()})
            times, memory = network_times(args.width, threads, args.repeats)
            network_runs.append(times)
    layers = [[*key, _ms(layer_runs, key, "float", 3)]
              + [c for kind in KINDS for c in (_ms(layer_runs, key, kind, 3), _ratio(layer_runs, key, "float", kind, 1))]
              for key in layer_runs[0]]
    network = [[*key, *(_ms(network_runs, key, k, 2) for k in ("float_eager", "float_ort", "int8_ort", "binary")),
                _ratio(network_runs, key, "float_ort", "binary", 2), _ratio(network_runs, key, "int8_ort", "binary", 2),
                f"{memory[key[0]]:.1f}x"] for key in network_runs[0]]
    body = "\n".join([
        "## Binary kernels: bit-packed conv against float32 and int8 (batch 1)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; kernel ISA: {isa()}  ",
        (f"Medians of {args.repeats} runs per contender, interleaved in blocks of 5, each block after a 50 ms "
         f"pause (torch's OpenMP workers spin 10-20 ms after a region and would hold the core the next runtime "
         f"needs) and 30 ms of untimed calls (an idle core starts slow); every ratio compares rows of the same run.  The whole run was repeated {args.runs} "
         "time(s): each cell gives the median over runs (ms), and each speed-up the median of the runs' ratios with "
         "their range.  During the runs, "
         f"{load.describe()}.{BUSY if load.busy else ''}{_clock_note(clocks)}"),
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
