"""Which channel multiple (``--round-to``) gives the speed, per runtime: the measurement behind ``--round-to auto``.

    python benchmarks/prune_defaults.py [--model vgg14] [--width 1.0] [--target 0.33] [--threads 2] [--repeats 30]

The model (random weights: latency does not depend on the values) is pruned to the MAC target with
``torchslim prune``'s other defaults (L1, global scope), its kept channels rounded to 1, 4, 8 and 16.
Each runtime (eager torch, ONNX Runtime fp32, OpenVINO fp32 when installed) times the base and the four
pruned models interleaved in one run (``compare_latency``: base, r1, r4, r8, r16, base, ...), so each
speed-up is a ratio from the same minutes of a shared machine.  Rounding changes the MACs kept a little,
so the table also gives the speed-up per MAC removed ("efficiency": speed-up x MACs kept; 1.0 means the
latency fell exactly as much as the MACs).  The best multiple per runtime is what
``torchslim/prune/defaults.py`` should hold for this CPU's instruction set.  Writes the
``prune-defaults`` section of BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.profile import compare_latency, count_macs, openvino, ort
from torchslim.prune import PruneConfig, prune
from torchslim.prune.defaults import cpu_simd, round_to_for

MULTIPLES = (1, 4, 8, 16)


def runtimes(shape, threads: int) -> dict:
    """name -> (model -> something ``compare_latency`` can call), for each runtime installed."""
    found = {"torch": lambda model: model}
    if ort.available():
        found["ort"] = lambda model: ort.OrtModule(ort.export_onnx_bytes(model, shape), threads)
    if openvino.available():
        found["openvino"] = lambda model: openvino.OpenVinoModule(
            openvino.from_onnx_bytes(ort.export_onnx_bytes(model, shape)), threads)
    return found


def pruned_models(base, shape, target: float) -> dict:
    example = torch.randn(1, *shape)
    out = {}
    for multiple in MULTIPLES:
        config = PruneConfig(criterion="l1", target_macs=target, scope="global", round_to=multiple)
        out[multiple] = prune(base, config, example_inputs=example).model.eval()
    return out


def build(name: str, width: float, size: int):
    torch.manual_seed(0)
    if ":" in name:
        return models.create_for_data(name, num_classes=10, in_channels=3, input_size=(size, size)).eval()
    return models.create(name, num_classes=10, width_mult=width, input_size=(size, size)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg14", help="zoo name or source (torchvision:resnet18)")
    parser.add_argument("--width", type=float, default=1.0, help="zoo models' width multiplier")
    parser.add_argument("--size", type=int, default=32, help="input side in pixels")
    parser.add_argument("--target", type=float, default=0.33, help="share of MACs to keep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--block", type=int, default=10, help="timed calls in a row per model and turn")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    shape = (3, args.size, args.size)
    base = build(args.model, args.width, args.size)
    began = time.perf_counter()
    pruned = pruned_models(base, shape, args.target)
    base_macs = count_macs(base, shape)
    kept = {m: count_macs(model, shape) / base_macs for m, model in pruned.items()}
    rows, best = [], {}
    for runtime, wrap in runtimes(shape, args.threads).items():
        timed = {"base": wrap(base), **{f"r{m}": wrap(model) for m, model in pruned.items()}}
        result = compare_latency(timed, shape, batch_size=1, threads=args.threads, repeats=args.repeats,
                                 block=args.block)
        base_ms = result["base"]["median_ms"]
        speedups = {m: base_ms / result[f"r{m}"]["median_ms"] for m in MULTIPLES}
        best[runtime] = max(MULTIPLES, key=lambda m: speedups[m] * kept[m])
        for m in MULTIPLES:
            rows.append([runtime, m, f"{kept[m]:.3f}", f"{base_ms:.3f}", f"{result[f'r{m}']['median_ms']:.3f}",
                         f"{speedups[m]:.2f}x", f"{speedups[m] * kept[m]:.2f}"])
        print(f"{runtime}: done", flush=True)
    choice = ", ".join(f"{r}: {m} (auto picks {round_to_for(r)})" for r, m in best.items())
    body = "\n".join([
        f"## Pruning defaults: the channel multiple per runtime ({args.model}, {args.target:.0%} of MACs)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; torch's SIMD level {cpu_simd()}  ",
        f"Model: {args.model}{f' width {args.width:g}' if ':' not in args.model else ''} (random weights), input "
        f"{'x'.join(map(str, shape))}, {base_macs:,} MACs, pruned with L1 and global scope to {args.target:g} of "
        f"its MACs, kept channels rounded to each multiple. Batch 1, {args.threads} thread(s); per runtime, the "
        f"base and the four models interleaved in one run, medians of {args.repeats} turns of {args.block} "
        "calls. Efficiency = speed-up x MACs kept (1.0: latency fell as much as the MACs). "
        f"Whole run {(time.perf_counter() - began) / 60:.1f} min.",
        "",
        markdown_table(["runtime", "round-to", "MACs kept", "base ms", "pruned ms", "speed-up", "efficiency"], rows),
        "",
        f"Most efficient multiple per runtime in this run: {choice}.",
    ])
    print(body)
    if not args.no_write:
        write_section("prune-defaults", body)


if __name__ == "__main__":
    main()
