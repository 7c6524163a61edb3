"""The Deep Compression pipeline (prune -> k-means weight sharing -> Huffman) on LeNets.

    python benchmarks/backend_deep_compression.py [--models lenet300,lenet5,lenet5-caffe] [--threads 1]

For each model on Fashion-MNIST (28x28): train a float base (or reuse it from
benchmarks/out/), prune per layer with the AGP schedule while fine-tuning, fold
BatchNorm into the pruned layers (a row scaling: zeros stay zeros), share weights
with k-means (per-layer bits, linear init), fine-tune the centroids, round the
centroids and biases to float16, then Huffman-code the codes and the relative
indices.  Each stage reports top-1 on the 10k test images and the bytes of its
packed file; the ratio is against the float32 file of the base model
(torchslim.save).  "payload" is the weight tensors alone (the container's
headers excluded), which is what the paper's ratios count.  A last table
shows where the bytes of the final file go.

The same method as a recipe: torchslim/recipes/deep-compression-lenet.yaml.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace

import torch
from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.codebook import WeightShareConfig, round_side_data, weight_share
from torchslim.data import load_dataset
from torchslim.distill import kd_loss_fn
from torchslim.export import PackOptions, find_packer, pack_model
from torchslim.export.compact import narrowest
from torchslim.prune.deploy import fold_batchnorm
from torchslim.profile import serialized_size
from torchslim.sparse import SparsityConfig, sparsify, sparsity_report
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")

@dataclass(frozen=True)
class Plan:
    base_epochs: int
    layer_sparsity: dict
    prune_epochs: int  # AGP fine-tune
    layer_bits: dict  # k-means bits per layer
    centroid_epochs: int
    prune_lr: float = 0.01
    agp_fraction: float = 0.75  # share of the prune epochs spent ramping; the rest trains at the final masks
    kd_alpha: float = 0.0  # teacher's share of the loss in both fine-tunes (0: labels only)
    kd_temperature: float = 4.0
    centroid_teacher: str = "pruned"  # the centroid fine-tune's teacher: "pruned" model or the float "base"
    centroid_lr: float = 1e-4  # Adam
    criterion: str = "magnitude"  # what the pruning ranks: |w| or "folded" (|w| with the BatchNorm folded in)
    model: str = ""  # the zoo model compressed (empty: the plan's name)
    teacher: str = ""  # whose float base distils in both fine-tunes: empty, the model's own; else another plan's
    seeds: tuple = (0,)  # fine-tune seeds (batch order); the tables show the first, the summary every one


PLANS = {
    "lenet300": Plan(8, {"classifier.0": 0.95, "classifier.3": 0.9, "classifier.6": 0.7}, 8,
                     {"classifier.0": 5, "classifier.3": 5, "classifier.6": 5}, 2),
    "lenet5": Plan(6, {"features.0": 0.3, "features.4": 0.75, "classifier.0": 0.955, "classifier.3": 0.9,
                       "classifier.6": 0.85}, 16,
                   {"features.0": 5, "features.4": 4, "classifier.0": 4, "classifier.3": 4, "classifier.6": 4}, 4,
                   agp_fraction=0.5, kd_alpha=0.9, centroid_teacher="base", centroid_lr=3e-4, seeds=(0, 1, 2)),
    # The paper's LeNet-5 (Caffe's 20-50-500) with the paper's kept shares (66%, 12%, 8%, 19%) and the
    # lenet5 plan's training; 4-bit codes where the paper had 8 (convs) and 5 (FCs).
    "lenet5-caffe": Plan(6, {"features.0": 0.34, "features.4": 0.88, "classifier.0": 0.92, "classifier.3": 0.81}, 16,
                         {"features.0": 5, "features.4": 4, "classifier.0": 4, "classifier.3": 4}, 4,
                         agp_fraction=0.5, kd_alpha=0.9, centroid_teacher="base", centroid_lr=3e-4, seeds=(0, 1, 2)),
}
# lenet5's plan with a stronger teacher: the float lenet5-caffe base (same input, 0.86 points above lenet5's).
PLANS["lenet5-kd"] = replace(PLANS["lenet5"], model="lenet5", teacher="lenet5-caffe")

# What the plan's choices were measured against (runs on this machine), written under its table.
FINDINGS = {"lenet5": (
    "What moved it (single-seed runs of this pipeline on the same base; points lost at the end, file ratio): the "
    "float base as the centroid fine-tune's teacher (0.88 lost at 40.0x with the pruned model as teacher and 5-bit "
    "codes on classifier.0 and classifier.6, 0.64 at 42.1x with it and 4-bit codes there), Adam 3e-4 for the "
    "centroids (0.56; 1e-3: 0.64; 8 epochs: 0.62).  Bits per layer: on the retrained pruned model of the test "
    "below, conv1 (105 weights) shared alone at 4 bits cost 0.80 points (0.9071 -> 0.8991; at 5 bits 0.06) and "
    "conv2 at 4 bits nothing, so conv1 now has 5 bits and conv2 4 (53 B less; on that model both allocations ended "
    "at 0.9063 after the centroid fine-tune).  On this run's pruned model (last table below) conv1 loses nothing at "
    "4 bits: a single layer's k-means loss moves from one pruned model to the next as much as with its bits.  "
    "Trading bits for weights did not pay.  Huffman-coded codes with 3 shared values ('2 bits') cost 7.7 bits per "
    "kept weight of classifier.0 (48,000 of the 62,136 weights) against 9.0 at 4 bits, so classifier.0 fits 93.5% "
    "sparse (960 more weights) in the budget: the pruned model scored 0.9082, but k-means took it to 0.8631 and the "
    "centroid fine-tune only back to 0.9022 (1.13 lost at 41.2x); the same model cut one-shot to 94.5% with 7 "
    "values ('3 bits'): 0.9039 (0.96 at 41.6x); 94.8% sparse at 4 bits (the bytes conv2's 4 bits save): pruned "
    "0.9059, end 0.9051 (0.84 at 40.6x).  Neither did a retrain of 4 epochs at the final masks with a fresh "
    "learning rate and no weight decay (SGD 0.01, cosine, float teacher: pruned 0.9062 -> 0.9071, end 0.9063, 0.72 "
    "lost) nor SGD 0.03 for the pruning fine-tune (pruned 0.9062, end 0.9049).  Earlier, denser convs (255 more "
    "weights: 0.65 lost) and a denser classifier.3 (202 more: 1.04) did not help either.  The previous plan's seed "
    "0 ended at 0.9079 (its other seeds were not run), above every end result measured for this section since "
    "(0.9022 to 0.9063).  Then the levers on the pruning stage itself, each a single change to this plan on seed 0 "
    "(whose pruned model is 0.9062 and end 0.9058 at 42.5x; pruned -> end top-1, file ratio): a 32-epoch fine-tune, "
    "the ramp over the first 16 and the masks held for 16 (0.9050 -> 0.9053, 42.7x); the weights ranked by |w| with "
    "the BatchNorm after each layer folded in, the scale the deployed layer computes with (criterion `folded`; on "
    "the base 22% of the weights it keeps in classifier.0 differ from those |w| keeps: 0.9068 -> 0.9048, 42.0x); "
    "conv2 denser, 60% sparse (360 more weights: 0.9064 -> 0.9059, 41.7x); distillation at temperature 2 instead of "
    "4 (0.9068 -> 0.9048, 43.2x).  None moved the end result by more than the spread of this plan's seeds (next), "
    "so the plan stays as it was.  The pruning stage is the ceiling: at 93.5% sparsity every variant's pruned model "
    "sat between 0.9050 and 0.9082, 0.5 to 0.85 points under the float base, and k-means plus the centroid "
    "fine-tune never won that back, so this plan meets the ratio target but not the 0.5-point one."),
    "lenet5-kd": (
    "The question: is lenet5's half point the teacher's limit?  The teacher scores 0.9221 against lenet5's 0.9135; "
    "the same 16-epoch fine-tune with nothing pruned reaches 0.9152-0.9160 with it (0.9126 with lenet5's own base "
    "as teacher, backend_sparsity_curve.py), and the pruned models 0.9072-0.9077 (0.9061-0.9072 with the own base).  "
    "The end result moves from a mean of 0.84 points lost to 0.72: a stronger teacher is worth about a tenth of a "
    "point here, not the third of a point the target needs."),
    "lenet5-caffe": (
    "This is the network of the paper's LeNet-5 row (Caffe's 20-50-500, 430,500 weights, 7x lenet5's 61,470; the "
    "paper: 431K weights to 8% kept, 39x with 8-bit conv and 5-bit FC codes on MNIST), pruned to the paper's kept "
    "shares per layer (66%, 12%, 8%, 19%) with the lenet5 plan's training and 4-bit codes (5 on conv1).  Its "
    "redundancy is what lenet5 lacks: the pruned model stays within 0.4 points of the float base at 91.6% "
    "sparsity, where lenet5 sat 0.5 to 0.85 under its own at 93.5%.")}


def base_model(name, train, epochs):
    path = os.path.join(OUT, f"backend-base-{name}-e{epochs}-noaug-fashion-mnist.safetensors")
    if os.path.exists(path):
        return torchslim.load(path), 0.0
    torch.manual_seed(0)
    model = models.create(name, num_classes=10)
    began = time.perf_counter()
    fit(model, train, TrainConfig(epochs=epochs, lr=0.05, batch_size=128, augment=False), progress=False)
    seconds = time.perf_counter() - began
    torchslim.save(model.eval(), path, input_shape=(1, 28, 28))
    return torchslim.load(path), seconds


def _entries(data: bytes) -> tuple[int, dict]:
    length = int.from_bytes(data[:8], "little")
    entries = json.loads(data[8:8 + length])
    return length, {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in entries.items() if k != "__metadata__"}


def payload_bytes(data: bytes) -> int:
    """Bytes of the weight tensors: the file less the safetensors JSON and the torchslim header tensor."""
    _, sizes = _entries(data)
    return sum(size for name, size in sizes.items() if name != "header")


def _field_group(name: str) -> str:
    if name.startswith("codes.gaps"):
        return "index table" if name.endswith(".lengths") else "indices"
    if name.startswith("codes.values") or name == "codes":
        return "index table" if name.endswith(".lengths") else "codes"
    return name


def byte_breakdown(model, data: bytes) -> tuple[list, list]:
    """Where the packed file's bytes go: container parts, then each layer's fields (stored dtypes)."""
    length, sizes = _entries(data)
    container = [["safetensors JSON (entries, offsets, format)", f"{8 + length:,}"],
                 ["torchslim header (SHA-256 + zlib JSON: architecture, layer records, data SHA-256)",
                  f"{sizes['header']:,}"]]
    container += [[f"tensor `{name}`", f"{size:,}"] for name, size in sorted(sizes.items()) if name != "header"]
    groups = ["indices", "codes", "index table", "centroids", "bias"]
    layers = []
    for path, module in model.named_modules():
        fields, _ = find_packer(module).pack(module, PackOptions(huffman=True))
        if not fields or not hasattr(module, "codes"):
            continue
        bytes_by = dict.fromkeys(groups, 0)
        for name, tensor in fields.items():
            stored = narrowest(tensor)
            bytes_by[_field_group(name)] = bytes_by.get(_field_group(name), 0) + stored.numel() * stored.element_size()
        nonzero = int((module.codes != 0).sum())
        layers.append([path, f"{nonzero:,}", str(module.table_size)] + [f"{bytes_by[g]:,}" for g in groups])
    return container, layers


SENSITIVITY_BITS = (2, 3, 4, 5, 6)


def bit_sensitivity(folded, test, plan) -> list:
    """Top-1 with one layer alone shared at each bit width (no fine-tune): what the plan's bits rest on."""
    paths = list(plan.layer_bits)
    rows = []
    for path in paths:
        others = tuple(p for p in paths if p != path)
        cells = [f"{evaluate(weight_share(folded, WeightShareConfig(bits=bits, exclude=others)), test)['top1']:.4f}"
                 for bits in SENSITIVITY_BITS]
        rows.append([path, str(plan.layer_bits[path])] + cells)
    return rows


def row(stage, model, test, baseline, huffman=False):
    result = _row(stage, model, test, baseline, huffman)
    print(" | ".join(result[0]), flush=True)
    return result


def _row(stage, model, test, baseline, huffman=False):
    data = pack_model(model, PackOptions(huffman=huffman))
    top1 = evaluate(model, test)["top1"]
    sparsity = sparsity_report(model)["sparsity"]
    return [stage, f"{top1:.4f}", f"{sparsity:.1%}", f"{len(data):,}", f"{baseline / len(data):.1f}x",
            f"{payload_bytes(data):,}", f"{baseline / payload_bytes(data):.1f}x"], top1, len(data)


def teacher_model(plan, base, train):
    """The float model the plan distils from: ``base`` itself, or another plan's float base."""
    if not plan.teacher:
        return base
    return base_model(zoo_name(plan.teacher), train, PLANS[plan.teacher].base_epochs)[0].eval()


def zoo_name(name: str) -> str:
    return PLANS[name].model or name


def _kd(plan, teacher):
    """Distillation from ``teacher`` (a frozen copy) when the plan asks for it, else the label loss."""
    if not plan.kd_alpha:
        return None
    return kd_loss_fn(copy.deepcopy(teacher), temperature=plan.kd_temperature, alpha=plan.kd_alpha)


def describe(name, plan) -> str:
    centroids = "and" if plan.centroid_teacher == "base" else "and from the pruned model"
    source = f"the float {plan.teacher} base" if plan.teacher else "the float base"
    teacher = (f"distillation (T {plan.kd_temperature:g}, teacher share {plan.kd_alpha:g}) from {source} "
               f"while pruning {centroids} while fine-tuning the centroids (Adam {plan.centroid_lr:g})"
               if plan.kd_alpha else f"labels only (no teacher); centroids fine-tuned with Adam {plan.centroid_lr:g}")
    ranked = "|w| with the BatchNorm after each layer folded in" if plan.criterion == "folded" else "|w|"
    return (f"Pruning (weights ranked by {ranked}): the AGP ramp reaches the final masks after "
            f"{plan.agp_fraction:.0%} of {plan.prune_epochs} epochs (SGD {plan.prune_lr:g}, cosine) and holds them "
            f"for the rest; {teacher}."
            + (f" {FINDINGS[name]}" if name in FINDINGS else ""))


def prune_stage(base, train, plan, seed, layer_sparsity=None, teacher=None):
    """The plan's pruning fine-tune of ``base`` (a new model), at ``layer_sparsity`` when given; with
    every sparsity 0 the same fine-tune runs with nothing pruned (the control).  ``teacher``: the
    distilling model (default: ``base``)."""
    layer_sparsity = plan.layer_sparsity if layer_sparsity is None else layer_sparsity
    teacher = base if teacher is None else teacher
    config = TrainConfig(epochs=plan.prune_epochs, lr=plan.prune_lr, schedule="cosine", weight_decay=5e-5,
                         augment=False, seed=seed)
    if not any(layer_sparsity.values()):
        model = copy.deepcopy(base)
        fit(model, train, config, loss_fn=_kd(plan, teacher), progress=False)
        return model.eval()
    return sparsify(base, SparsityConfig(layer_sparsity=layer_sparsity, schedule="agp",
                                         agp_fraction=plan.agp_fraction, criterion=plan.criterion),
                    train, train_config=config, loss_fn=_kd(plan, teacher), progress=False)


def run_model(name, train, test, seed=0, sensitivity=True):
    plan = PLANS[name]
    base, train_seconds = base_model(zoo_name(name), train, plan.base_epochs)
    baseline = serialized_size(base)
    rows = []
    r, base_top1, _ = row("float base (BatchNorm)", base, test, baseline)
    rows.append(r)
    distil = teacher_model(plan, base, train)
    if plan.teacher:  # the control: the same fine-tune and teacher with nothing pruned
        control = prune_stage(base, train, plan, seed, {k: 0.0 for k in plan.layer_sparsity}, teacher=distil)
        rows.append(row(f"teacher {plan.teacher} ({evaluate(distil, test)['top1']:.4f}): float fine-tuned with it, "
                        "nothing pruned", control, test, baseline)[0])
    began = time.perf_counter()
    pruned = prune_stage(base, train, plan, seed, teacher=distil)
    rows.append(row(f"pruned (AGP, {plan.prune_epochs} epochs)", pruned, test, baseline)[0])
    teacher = distil if plan.centroid_teacher == "base" else pruned  # base: `teacher: original` in the recipe
    pruned = fold_batchnorm(pruned)  # row scaling: the zeros stay zeros
    rows.append(row("BatchNorm folded", pruned, test, baseline)[0])
    sensitivity = bit_sensitivity(pruned, test, plan) if sensitivity else []
    shared = weight_share(pruned, WeightShareConfig(bits=5, layer_bits=plan.layer_bits, init="linear"))
    bits = "/".join(str(b) for b in plan.layer_bits.values())
    rows.append(row(f"k-means ({bits} bits)", shared, test, baseline)[0])
    fit(shared, train, TrainConfig(epochs=plan.centroid_epochs, lr=plan.centroid_lr, optimizer="adam",
                                   schedule="cosine", weight_decay=0.0, augment=False, seed=seed),
        loss_fn=_kd(plan, teacher), progress=False)
    shared.eval()
    rows.append(row(f"+ centroid fine-tune ({plan.centroid_epochs} epochs)", shared, test, baseline)[0])
    round_side_data(shared, "float16")
    rows.append(row("+ centroids and biases in float16", shared, test, baseline)[0])
    final, final_top1, final_size = row("+ Huffman coding", shared, test, baseline, huffman=True)
    rows.append(final)
    seconds = time.perf_counter() - began
    breakdown = byte_breakdown(shared, pack_model(shared, PackOptions(huffman=True)))
    if sensitivity:  # the first seed's model
        torchslim.save(shared, os.path.join(OUT, f"backend-deep-compression-{name}.safetensors"),
                       input_shape=(1, 28, 28))
    summary = (f"**{name}**: {baseline:,} B float32 file -> {final_size:,} B packed, "
               f"**{baseline / final_size:.1f}x**, top-1 {base_top1:.4f} -> {final_top1:.4f} "
               f"({100 * (final_top1 - base_top1):+.2f} points). Base training {plan.base_epochs} epochs"
               f"{f' ({train_seconds:.0f} s)' if train_seconds else ' (reused)'}; compression {seconds:.0f} s.")
    return summary, rows, breakdown, sensitivity


def _cache_path(name, seed):
    return os.path.join(OUT, f"backend-deep-compression-{name}{f'-s{seed}' if seed else ''}.json")


def cached_run(name, train, test, reuse, seed=0, sensitivity=True):
    """``run_model``'s result for one seed, stored with the plan that made it; reused only for the same plan."""
    path = _cache_path(name, seed)
    plan = json.loads(json.dumps(asdict(PLANS[name])))
    plan.pop("seeds")  # which seeds the section shows is no part of how one seed's rows are made
    if reuse and os.path.exists(path):
        with open(path) as handle:
            stored = json.load(handle)
        defaults = {f.name: f.default for f in fields(Plan) if f.default is not MISSING and f.name != "seeds"}
        if {**defaults, **stored["plan"]} == plan:  # a field added since then ran at its default
            print(f"{name} seed {seed}: rows reused from {path}", flush=True)
            summary = stored["summary"] + " (Rows from this script's last run of the same plan.)"
            return summary, stored["rows"], tuple(stored["breakdown"]), stored.get("sensitivity", [])
    summary, rows, breakdown, sensitivity = run_model(name, train, test, seed, sensitivity)
    with open(path + ".tmp", "w") as handle:
        json.dump({"plan": plan, "summary": summary, "rows": rows, "breakdown": breakdown,
                   "sensitivity": sensitivity}, handle)
    os.replace(path + ".tmp", path)
    return summary, rows, breakdown, sensitivity


def seed_summary(seeds, runs) -> str:
    """Every seed's pruned and final top-1 with their mean and spread (no seed left out)."""
    if len(seeds) < 2:
        return ""
    base = float(runs[0][0][1])
    pruned = [float(next(r for r in rows if r[0].startswith("pruned"))[1]) for rows in runs]
    final = [float(rows[-1][1]) for rows in runs]
    ratios = [rows[-1][4] for rows in runs]
    each = ", ".join(f"seed {s} {p:.4f} -> {f:.4f} ({r})" for s, p, f, r in zip(seeds, pruned, final, ratios))
    mean = sum(final) / len(final)
    return (f"Seeds of this plan (the seed of both fine-tunes' batch order; the tables are seed {seeds[0]}), pruned "
            f"-> end top-1 (file ratio): {each}.  Mean end top-1 {mean:.4f} ({100 * (mean - base):+.2f} points "
            f"against the float base {base:.4f}), spread {min(final):.4f} to {max(final):.4f}; mean pruned "
            f"{sum(pruned) / len(pruned):.4f}.")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="lenet300,lenet5,lenet5-caffe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", action="store_true",
                        help="take a model's rows from its last run (benchmarks/out) when its plan is unchanged")
    parser.add_argument("--only-seed", type=int, default=None,
                        help="run (and cache) this one seed of each model's plan and write no section: "
                             "seeds can run in parallel processes, then a --reuse run writes the section")
    parser.add_argument("--section", default="backend-deep-compression", help="BENCHMARKS.md section to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    if args.only_seed is not None:
        for name in args.models.split(","):
            if args.only_seed not in PLANS[name].seeds:
                parser.error(f"seed {args.only_seed} is not in {name}'s plan (seeds {PLANS[name].seeds})")
            print(cached_run(name, train, test, args.reuse, args.only_seed,
                             sensitivity=args.only_seed == PLANS[name].seeds[0])[0], flush=True)
        return
    distilled = any(PLANS[name].teacher for name in args.models.split(","))
    title = "## Back-end: the Deep Compression pipeline on LeNets (Fashion-MNIST)"
    body = [title + (", distilled from a stronger float model" if distilled else ""), "",
            f"Command: `{command_line()}`", "", f"Hardware: {hardware()}", "",
            "No augmentation. Per-layer sparsity with the AGP schedule (per model below), k-means weight "
            "sharing with per-layer bits (linear init), centroid fine-tune (Adam), centroids and biases "
            "rounded to float16, Huffman coding of codes and relative indices, packed container format 2.  BatchNorm is folded into the "
            "pruned layers before weight sharing (the deployed form).  Ratios are against the float32 "
            "`torchslim.save` file of the base model; *payload* counts the weight tensors only (no "
            "safetensors JSON, no torchslim header), as the paper's ratios do.  Target: >= 40x at "
            "<= 0.5 points lost.  The machine was shared with other jobs (times are wall clock).", ""]
    for name in args.models.split(","):
        seeds = PLANS[name].seeds
        runs = [cached_run(name, train, test, args.reuse, seed, sensitivity=index == 0)
                for index, seed in enumerate(seeds)]
        summary, rows, (container, layers), sensitivity = runs[0]
        seeds_line = seed_summary(seeds, [run[1] for run in runs])
        body += [f"{summary} {describe(name, PLANS[name])}" + (f"  {seeds_line}" if seeds_line else ""), "",
                 markdown_table(["stage", "top-1", "sparsity", "file bytes", "ratio", "payload bytes",
                                 "payload ratio"], rows), "",
                 f"Where the {name} file's bytes go (container, then each layer's stored fields):", "",
                 markdown_table(["part", "bytes"], container), "",
                 markdown_table(["layer", "non-zero", "table", "indices", "codes", "Huffman tables", "centroids",
                                 "bias"], layers), ""]
        if sensitivity:
            body += [f"Which {name} layers need the bits: top-1 of the folded pruned model with one layer alone "
                     "shared (k-means, linear init, no fine-tune), the others left in float:", "",
                     markdown_table(["layer", "plan bits"] + [f"{b} bits" for b in SENSITIVITY_BITS], sensitivity),
                     ""]
        print(summary, seeds_line, flush=True)
    write_section(args.section, "\n".join(body))


if __name__ == "__main__":
    main()
