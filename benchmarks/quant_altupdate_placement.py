"""The alternating update's place in the HWGQ + BWN recipe, at equal training budgets.

    python benchmarks/quant_altupdate_placement.py [--epochs 1,3] [--seeds 0,1] [--subset 15000] [--only E:INIT:SEED]

From the shared float base (vgg14 width 0.25), ``hwgq-zero-uniform-bwn`` with fitted scales and
BN statistics, then a KD fine-tune (T 2, teacher share 0.5, Adam 1e-3 cosine, batch 128) of E epochs
on a class-balanced subset, starting either from the calibrated model (``init: none``) or from the
alternating update of it (``init: alt``, the recipe's ``--alt-init``).  After each fine-tune: nothing,
the plain alternating update (the paper's fine-tune step), or the guarded one (a layer kept only if the
outputs on 1024 held-out training images move closer to the float model's).  Top-1 is that of the
model reloaded from its packed file, on the full 10k test images.

Each fine-tune's result is cached in ``benchmarks/out/altplace-*.json``; ``--only`` runs one
(so two processes can share the work) and a final call without it writes the section.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim.data import load_dataset
from torchslim.distill import kd_loss_fn
from torchslim.io import atomic_write_text
from torchslim.quant import QuantConfig, clip_latent_weights, freeze, quantize
from torchslim.quant.altupdate import alternating_update
from torchslim.data.calibration import calibration_images
from torchslim.quant.calibrate import calibrate_act_scales
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
BASE = os.path.join(OUT, "shared", "base-vgg14-w0.25-e10-fashion-mnist-32.safetensors")
INITS = ("none", "alt")
AFTER = ("none", "plain", "guarded")


def packed_top1(model, test, tag: str) -> float:
    path = os.path.join(OUT, f"altplace-{tag}.packed.safetensors")
    save_frozen(freeze(model), path)
    top1 = evaluate(load_frozen(path), test)["top1"]
    os.remove(path)
    return top1


def run_one(base, train, test, epochs: int, init: str, seed: int, calib: int) -> dict:
    """One fine-tune (cached) and the three after-steps; returns the result record."""
    path = os.path.join(OUT, f"altplace-e{epochs}-{init}-s{seed}-n{len(train)}-c{calib}.json")
    if os.path.exists(path):
        return json.load(open(path))
    began = time.perf_counter()
    batches = calibration_images(train, calib)
    held_out = calibration_images(train, calib, skip=calib)
    torch.manual_seed(seed)
    model = quantize(base, QuantConfig(method="hwgq-zero-uniform-bwn", act_bits=2))
    calibrate_act_scales(model, batches)  # re-estimates BN statistics too
    if init == "alt":
        model, _ = alternating_update(model, batches, reference=base)
    fit(model, train, TrainConfig(epochs=epochs, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="cosine",
                                  batch_size=128, seed=seed),
        loss_fn=kd_loss_fn(copy.deepcopy(base), temperature=2.0, alpha=0.5), on_step=clip_latent_weights,
        progress=False)
    tag = f"e{epochs}-{init}-s{seed}"
    record = {"epochs": epochs, "init": init, "seed": seed, "images": len(train), "top1": {}}
    record["top1"]["none"] = packed_top1(model, test, tag)
    plain, _ = alternating_update(model, batches, reference=base)
    record["top1"]["plain"] = packed_top1(plain, test, tag)
    guarded, reports = alternating_update(model, batches, reference=base, guard=True, guard_batches=held_out)
    record["top1"]["guarded"] = packed_top1(guarded, test, tag)
    record["guard_kept"] = sum(r.accepted for r in reports)
    record["layers"] = len(reports)
    record["minutes"] = (time.perf_counter() - began) / 60
    atomic_write_text(path, json.dumps(record))
    print(json.dumps(record), flush=True)
    return record


def table(records: list[dict]) -> str:
    rows = []
    for epochs in sorted({r["epochs"] for r in records}):
        for init in INITS:
            for after in AFTER:
                found = [r for r in records if r["epochs"] == epochs and r["init"] == init]
                if not found:
                    continue
                values = [r["top1"][after] for r in found]
                kept = ", ".join(f"{r['guard_kept']}/{r['layers']}" for r in found) if after == "guarded" else "-"
                rows.append([epochs, init, after, " / ".join(f"{v:.4f}" for v in values),
                             f"{statistics.mean(values):.4f}", kept])
    return markdown_table(["fine-tune epochs", "alt update before", "alt update after", "top-1 per seed",
                           "mean", "guard kept"], rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--epochs", default="1,3")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--subset", type=int, default=15000)
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, metavar="E:INIT:SEED", help="run this one fine-tune and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    base = torchslim.load(args.base)
    train = load_dataset("fashion-mnist-32", "train", subset=args.subset)
    test = load_dataset("fashion-mnist-32", "test")
    runs = [(int(e), init, int(s)) for e in args.epochs.split(",") for init in INITS for s in args.seeds.split(",")]
    if args.only:
        e, init, s = args.only.split(":")
        runs = [(int(e), init, int(s))]
    records = [run_one(base, train, test, e, init, s, args.calib) for e, init, s in runs]
    if args.only:
        return
    base_top1 = evaluate(base, test)["top1"]
    body = f"""## Quantization: where the alternating update goes in the HWGQ + BWN recipe (vgg14 width 0.25)

Command: `{command_line()}`
Hardware: {hardware()} (a shared machine)
From `{os.path.relpath(args.base, ROOT)}` (float top-1 {base_top1:.4f}): hwgq-zero-uniform-bwn, scales and BN statistics
fitted on {args.calib} training images, optionally the alternating update ("before"), then a KD fine-tune (T 2,
teacher share 0.5, Adam 1e-3 cosine, batch 128, crop and flip) of the given epochs on {args.subset} class-balanced
training images, then nothing, the plain alternating update or the guarded one ("after"; guarded: a layer's
update kept only if the outputs on the next {args.calib} training images move closer to the float model's).
Every row of one seed shares that seed's data order; a guarded row that kept no layer differs from "none" only
by the BatchNorm statistics, which every update re-estimates on the calibration images.  Top-1 of the model reloaded from its packed file, on the
full 10k test images.  Fine-tunes: {sum(r['minutes'] for r in records):.1f} min of compute in all (runs split over
processes with `--only`); this report: {(time.perf_counter() - began) / 60:.1f} min.

{table(records)}
"""
    print(body)
    write_section("quant-altupdate-placement", body)


if __name__ == "__main__":
    main()
