"""CPU latency speed-up and file size of pruned models, beside Torch-Pruning, at batch 1.

    python benchmarks/prune_latency.py [--width 1.0] [--targets 0.33,0.5] [--threads 1] [--repeats 40]

VGG14 (random weights: latency does not depend on the values) is pruned to each MAC
target by torchslim (L1, per-layer uniform, with channel counts rounded to 1, 8 or 16;
L1 global rounded to 8; L1 global to an ONNX Runtime latency target equal to the MAC
target, ``--target-latency``) and by Torch-Pruning (L1 uniform, ratio bisected to the same
MACs).  Every model is
timed interleaved with the unpruned base in one run (``compare_latency``: base, a, b,
..., base, a, b, ...), so the speed-ups are ratios from the same minutes of a shared
machine.  "folded" rows fold BatchNorm into the convs (torchslim.prune.deploy); the
speed-up of a folded model is given against the base as shipped and against the base
folded too.  With onnxruntime installed, each unfolded model also runs as ONNX (opset 17,
all graph optimisations, which fold BatchNorm) in an interleaved run of their own, and its
speed-up is against the base in ONNX Runtime.  Writes the ``prune_latency_w<width>``
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.profile import ort
from torchslim.profile import compare_latency, count_macs, serialized_size
from torchslim.prune import PruneConfig, prune
from torchslim.prune.deploy import fold_batchnorm


def variants(base, target: float, threads: int) -> dict:
    from prune_accuracy import tp_prune

    out = {}
    for round_to in (1, 8, 16):
        model = prune(base, config=PruneConfig(criterion="l1", target_macs=target, scope="layer",
                                               round_to=round_to)).model.eval()
        out[f"torchslim L1 uniform, round-to {round_to}"] = model
        out[f"torchslim L1 uniform, round-to {round_to}, folded"] = fold_batchnorm(model)
    model = prune(base, config=PruneConfig(criterion="l1", target_macs=target, scope="global",
                                           round_to=8)).model.eval()
    out["torchslim L1 global, round-to 8"] = model
    out["torchslim L1 global, round-to 8, folded"] = fold_batchnorm(model)
    if ort.available():
        model = prune(base, config=PruneConfig(criterion="l1", target_latency=target, latency_runtime="ort",
                                               scope="global", round_to=8, latency_threads=threads)).model.eval()
        out[f"torchslim L1 global, ORT latency <= {target:g}, round-to 8"] = model
    tp_model = tp_prune(base, target, "l1-uniform", [])[0].eval()
    out["Torch-Pruning L1 uniform"] = tp_model
    out["Torch-Pruning L1 uniform, folded"] = fold_batchnorm(tp_model)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--targets", default="0.33,0.5")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--block", type=int, default=10, help="timed calls in a row per model and turn")
    args = parser.parse_args()
    torch.manual_seed(0)
    base = models.create("vgg14", num_classes=10, width_mult=args.width).eval()
    shape = (3, 32, 32)
    base_macs, base_bytes = count_macs(base, shape), serialized_size(base)
    folded_base = fold_batchnorm(base)
    rows = []
    began = time.perf_counter()
    thread_counts = [int(t) for t in args.threads.split(",")]
    for target in [float(t) for t in args.targets.split(",")]:
        pruned = variants(base, target, thread_counts[0])
        for threads in thread_counts:
            timed = {"base": base, "base folded": folded_base, **pruned}
            result = compare_latency(timed, shape, batch_size=1, threads=threads, repeats=args.repeats,
                                     block=args.block)
            if ort.available():  # in a run of its own; ORT folds BatchNorm itself: the unfolded models only
                result.update(compare_latency(
                    {f"{name} (ORT)": ort.OrtModule(ort.export_onnx_bytes(model, shape), threads)
                     for name, model in {"base": base, **pruned}.items() if not name.endswith("folded")},
                    shape, batch_size=1, threads=threads, repeats=args.repeats, block=args.block))
            base_ms, folded_ms = result["base"]["median_ms"], result["base folded"]["median_ms"]

            def ort_cells(name):
                if f"{name} (ORT)" not in result:
                    return ["-", "-"]
                ms, base_ort = result[f"{name} (ORT)"]["median_ms"], result["base (ORT)"]["median_ms"]
                return [f"{ms:.3f}", f"{base_ort / ms:.2f}x"]

            for name, model in pruned.items():
                ms = result[name]["median_ms"]
                same = f"{folded_ms / ms:.2f}x" if name.endswith("folded") else f"{base_ms / ms:.2f}x"
                rows.append([f"{target:.0%}", threads, name, f"{count_macs(model, shape) / base_macs:.3f}",
                             f"{base_bytes / serialized_size(model):.2f}x", f"{ms:.3f}", f"{base_ms / ms:.2f}x",
                             same, *ort_cells(name)])
            rows.append([f"{target:.0%}", threads, "base (unpruned)", "1.000", "1.00x", f"{base_ms:.3f}", "1.00x",
                         f"{base_ms / folded_ms:.2f}x folded", *ort_cells("base")])
            print(f"target {target}, {threads} thread(s): done", flush=True)
    body = "\n".join([
        f"## Pruning: CPU latency and file size, vgg14 width {args.width}, batch 1",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Base: vgg14 width {args.width} (random weights), {base_macs:,} MACs, {base_bytes:,} bytes. Medians of "
        f"{args.repeats} runs per model after warm-up, interleaved in turns of {args.block} call(s) in a row "
        "(after an untimed one); speed-ups are ratios within one run. "
        "\"vs base\" compares with the unpruned model as shipped; \"vs like base\" compares a folded model "
        "with the base folded too (the speed-up that pruning alone gives). \"ORT\": the same model in ONNX "
        "Runtime (opset 17, all graph optimisations; it folds BatchNorm itself), against the base in ONNX "
        "Runtime, timed in an interleaved run of their own right after; the latency-target row was selected "
        "with tables timed on the first thread count. "
        f"Whole run {(time.perf_counter() - began) / 60:.1f} min.",
        "",
        markdown_table(["MACs target", "threads", "model", "MACs kept", "file smaller", "ms", "vs base",
                        "vs like base", "ORT ms", "ORT vs base"], rows),
    ])
    write_section(f"prune_latency_w{args.width:g}", body)


if __name__ == "__main__":
    main()
