"""How much accuracy the pruning stage of the Deep Compression plan costs at each sparsity.

    python benchmarks/backend_sparsity_curve.py [--model lenet5] [--scales 0,0.8,0.93,1] [--seed 0]

The plan's per-layer sparsities (backend_deep_compression.py) are scaled by each
factor and the plan's pruning fine-tune (AGP, distillation from the float base, same
epochs and learning rate) runs from the same float base; scale 0 runs that fine-tune
with nothing pruned (the control), scale 1 is the plan.  Only the pruning stage is
run: k-means and the centroid fine-tune end within about 0.2 points of it, so this
stage sets the end result.  Each point is cached in benchmarks/out, so
points can run in parallel processes (--no-write) before one run writes the section.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from backend_deep_compression import OUT, PLANS, base_model, prune_stage
from common import command_line, hardware, markdown_table, write_section

from torchslim.data import load_dataset
from torchslim.sparse import sparsity_report
from torchslim.train import evaluate


def point(name, scale, seed, train, test, base) -> dict:
    """Top-1 and sparsity of the plan's pruning stage at ``scale`` x its sparsities (cached)."""
    plan = PLANS[name]
    path = os.path.join(OUT, f"backend-sparsity-curve-{name}-x{scale:g}-s{seed}.json")
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    began = time.perf_counter()
    layer_sparsity = {layer: value * scale for layer, value in plan.layer_sparsity.items()}
    pruned = prune_stage(base, train, plan, seed, layer_sparsity)
    report = sparsity_report(pruned)
    result = {"scale": scale, "seed": seed, "sparsity": report["sparsity"],
              "nonzero": report["nonzero"],
              "top1": evaluate(pruned, test)["top1"], "seconds": round(time.perf_counter() - began)}
    with open(path + ".tmp", "w") as handle:
        json.dump(result, handle)
    os.replace(path + ".tmp", path)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet5", choices=sorted(PLANS))
    parser.add_argument("--scales", default="0,0.8,0.93,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="only compute (and cache) the points")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    plan = PLANS[args.model]
    base, _ = base_model(args.model, train, plan.base_epochs)
    base_top1 = evaluate(base, test)["top1"]
    rows = []
    for scale in (float(s) for s in args.scales.split(",")):
        r = point(args.model, scale, args.seed, train, test, base)
        print(json.dumps(r), flush=True)
        rows.append([f"{scale:g}", f"{r['sparsity']:.1%}", f"{r['nonzero']:,}", f"{r['top1']:.4f}",
                     f"{100 * (r['top1'] - base_top1):+.2f}", str(r["seconds"])])
    if args.no_write:
        return
    sparsities = ", ".join(f"{layer} {value:.1%}" for layer, value in plan.layer_sparsity.items())
    body = f"""## Back-end: accuracy of the pruning stage against sparsity ({args.model}, Fashion-MNIST)

Command: `{command_line()}`
Hardware: {hardware()}

The Deep Compression plan's per-layer sparsities ({sparsities}) scaled by each factor; the plan's pruning
fine-tune ({plan.prune_epochs} epochs, SGD {plan.prune_lr:g} cosine, AGP ramp over {plan.agp_fraction:.0%}, distillation from
the float base with teacher share {plan.kd_alpha:g}) from the same float base (top-1 {base_top1:.4f}), seed {args.seed}; factor 0 is
the same fine-tune with nothing pruned.  Weight sharing and Huffman coding come after this stage; in the
pipeline's runs (backend_deep_compression.py) the packed model ended within 0.2 points of its pruned model,
so this stage sets the end result.

{markdown_table(["factor", "sparsity", "non-zero weights", "top-1", "change from base", "seconds"], rows)}
"""
    write_section(f"backend-sparsity-curve-{args.model}", body)


if __name__ == "__main__":
    main()
