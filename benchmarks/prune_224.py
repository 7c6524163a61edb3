"""torchvision resnet18 and mobilenet_v2 at 224x224, pruned to half their MACs: speed-ups per runtime.

    python benchmarks/prune_224.py [--models resnet18,mobilenet_v2] [--target 0.5] [--threads 1] [--repeats 30]
    python benchmarks/prune_224.py --quick      # 64x64, few repeats, prints only (checks the script)

Each model (random weights: latency does not depend on the values) is pruned to the MAC target by
torchslim with ``torchslim prune``'s defaults (L1, global scope, ``--round-to auto`` for eager torch)
and by Torch-Pruning 1.6.1 (L1, its per-layer ratio bisected to the same MACs, classifier left alone).
Batch 1.  Per runtime, the base and both pruned models run interleaved in one run (eager torch fp32,
ONNX Runtime fp32, ONNX Runtime static int8 (QDQ, per-channel), and OpenVINO int8 (NNCF PTQ) when
installed); int8 models are calibrated on 32 random images.  Speed-ups are ratios within one run:
against the base on the same runtime, and for int8 also against the base in ONNX Runtime fp32.
Writes the ``prune-224`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time

import torch

from common import command_line, hardware, markdown_table, write_section
from prune_accuracy import tp_prune

from torchslim import models
from torchslim.profile import compare_latency, count_macs, count_params, openvino, ort
from torchslim.prune import PruneConfig, prune

VARIANTS = ("base", "torchslim", "Torch-Pruning")


def pruned(base, shape, target: float) -> dict:
    ours = prune(base, PruneConfig(criterion="l1", target_macs=target, scope="global", round_to="auto"),
                 example_inputs=torch.randn(1, *shape))
    theirs, _ = tp_prune(base, target, "l1-uniform", [])
    return {"base": base, "torchslim": ours.model.eval(), "Torch-Pruning": theirs.eval()}, ours.round_to


def runtimes(nets: dict, shape, threads: int, calibration) -> dict:
    """runtime -> {variant: callable}: every runtime installed, each model converted for it."""
    onnx = {name: ort.export_onnx_bytes(net, shape) for name, net in nets.items()}
    out = {"eager fp32": nets, "ORT fp32": {n: ort.OrtModule(b, threads) for n, b in onnx.items()},
           "ORT int8": {n: ort.OrtModule(ort.quantize_qdq(b, calibration), threads) for n, b in onnx.items()}}
    if openvino.available():
        from torchslim.export.openvino import runtime_pair  # optional: torchslim[openvino]

        out["OpenVINO int8"] = {n: openvino.OpenVinoModule(runtime_pair(net, shape, calibration)[1], threads)
                                for n, net in nets.items()}
    return out


def measure(name: str, args, shape) -> list[list]:
    torch.manual_seed(0)
    base = models.create(f"torchvision:{name}", input_size=shape[1:]).eval()
    nets, multiple = pruned(base, shape, args.target)
    print(f"{name}: pruned (torchslim round-to {multiple}, Torch-Pruning bisected)", flush=True)
    macs, params = {n: count_macs(m, shape) for n, m in nets.items()}, {n: count_params(m) for n, m in nets.items()}
    calibration = torch.randn(32, *shape)
    ms = {}
    for runtime, timed in runtimes(nets, shape, args.threads, calibration).items():
        result = compare_latency(timed, shape, batch_size=1, threads=args.threads, repeats=args.repeats,
                                 block=args.block)
        ms[runtime] = {n: result[n]["median_ms"] for n in timed}
        print(f"{name}: {runtime} done", flush=True)
    rows = []
    for variant in VARIANTS:
        cells = [f"torchvision:{name}", variant + (f" (round-to {multiple})" if variant == "torchslim" else ""),
                 f"{macs[variant] / macs['base']:.3f}", f"{params[variant] / params['base']:.3f}"]
        for runtime, table in ms.items():
            cells += [f"{table[variant]:.3f}", f"{table['base'] / table[variant]:.2f}x"]
        if "ORT int8" in ms:
            cells.append(f"{ms['ORT fp32']['base'] / ms['ORT int8'][variant]:.2f}x")
        rows.append(cells)
    return rows, list(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2", help="torchvision classification builders")
    parser.add_argument("--target", type=float, default=0.5, help="share of MACs to keep")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--block", type=int, default=5, help="timed calls in a row per model and turn")
    parser.add_argument("--quick", action="store_true", help="64x64, 3 repeats, print only: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.block = 64, 3, 2
    shape = (3, args.size, args.size)
    began, rows, names = time.perf_counter(), [], []
    for name in args.models.split(","):
        model_rows, names = measure(name, args, shape)
        rows += model_rows
    header = ["model", "pruned by", "MACs kept", "params kept"]
    for runtime in names:
        header += [f"{runtime} ms", "speed-up"]
    header.append("int8 vs base ORT fp32")
    body = "\n".join([
        f"## Pruning torchvision models at {args.size}x{args.size}: speed-up per runtime, batch 1",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; timed with {args.threads} thread(s); Torch-Pruning "
        f"{importlib.metadata.version('torch-pruning')}  ",
        f"Random weights, pruned to {args.target:g} of the MACs: torchslim L1 global with its default "
        "--round-to auto; Torch-Pruning L1 uniform, ratio bisected to the same MACs. Per runtime, base and both "
        f"pruned models interleaved in one run, medians of {args.repeats} turns of {args.block} calls; "
        "speed-up = the base's ms on that runtime / the model's. int8: calibrated on 32 random images. "
        f"Whole run {(time.perf_counter() - began) / 60:.1f} min.",
        "",
        markdown_table(header, rows),
    ])
    print(body)
    if not args.quick:
        write_section("prune-224", body)


if __name__ == "__main__":
    main()
