"""Why the alternating update after a fine-tune helps or hurts: its targets and the guard, side by side.

    python benchmarks/quant_altupdate.py [--subsets 5000,15000] [--test-subset 3000]

From the shared float base (vgg14 width 0.25), ``hwgq-zero-uniform-bwn`` with fitted scales, the
alternating update before fine-tuning and one KD epoch (T 2, teacher share 0.5, Adam 1e-3, seed 0)
on each training subset; the fine-tuned state is cached in ``benchmarks/out``.  Then, on 1024
calibration images, each variant of the update after the fine-tune:

* ``none``: the fine-tuned model; ``bn``: its BatchNorm statistics re-estimated only;
* ``float``: target the float model's layer outputs (the published method);
* ``latent``: target the quantized layers' latent float weights applied to their inputs;
* ``self``: target the fine-tuned model's own layer outputs;
* ``guard (fit images)`` / ``guard (held out)``: ``float`` with a layer kept only if the KL to
  the float model's outputs falls, judged on the calibration images or on the next 1024.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim.data import load_dataset
from torchslim.distill import kd_loss_fn
from torchslim.quant import QuantConfig, clip_latent_weights, quantize
from torchslim.quant.altupdate import alternating_update, recalibrate_bn
from torchslim.data.calibration import calibration_images
from torchslim.quant.calibrate import calibrate_act_scales
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
BASE = os.path.join(OUT, "shared", "base-vgg14-w0.25-e10-fashion-mnist-32.safetensors")


def fine_tuned(base, train, batches, subset):
    model = quantize(base, QuantConfig(method="hwgq-zero-uniform-bwn", act_bits=2))
    state = os.path.join(OUT, f"quant-altupdate-ft-{subset}.pt")
    if os.path.exists(state):
        model.load_state_dict(torch.load(state))
        return model
    calibrate_act_scales(model, batches)
    model, _ = alternating_update(model, batches, reference=base)
    torch.manual_seed(0)
    fit(model, train, TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="cosine",
                                  batch_size=128, seed=0),
        loss_fn=kd_loss_fn(copy.deepcopy(base), temperature=2.0, alpha=0.5), on_step=clip_latent_weights,
        progress=False)
    torch.save(model.state_dict(), state)
    return model


def variants(model, base, batches, held_out):
    def update(**kwargs):
        tuned, reports = alternating_update(model, batches, **kwargs)
        return tuned, f"{sum(r.accepted for r in reports)} of {len(reports)}"

    yield "none", lambda: (model, "-")
    yield "bn", lambda: (recalibrate_bn(copy.deepcopy(model), batches), "-")
    yield "float", lambda: update(reference=base)
    yield "latent", lambda: update(reference=None)
    yield "self", lambda: update(reference=copy.deepcopy(model))
    yield "guard (fit images)", lambda: update(reference=base, guard=True)
    yield "guard (held out)", lambda: update(reference=base, guard=True, guard_batches=held_out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", default="5000,15000")
    parser.add_argument("--test-subset", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    base = torchslim.load(BASE)
    test = load_dataset("fashion-mnist-32", "test", subset=args.test_subset)
    rows = []
    for subset in [int(s) for s in args.subsets.split(",")]:
        train = load_dataset("fashion-mnist-32", "train", subset=subset)
        batches = calibration_images(train, 1024)
        held_out = calibration_images(train, 1024, skip=1024)
        model = fine_tuned(base, train, batches, subset)
        for name, run in variants(model, base, batches, held_out):
            tuned, kept = run()
            rows.append([subset, name, kept, f"{evaluate(tuned, test)['top1']:.4f}"])
            print(rows[-1], flush=True)
    body = f"""## Quantization: the alternating update after the fine-tune, by target (vgg14 width 0.25)

Command: `{command_line()}`
Hardware: {hardware()} (a shared machine)
From `{os.path.relpath(BASE, ROOT)}`: hwgq-zero-uniform-bwn, fitted scales, alternating update, then one KD
epoch on the subset (batches of 128, the last partial one dropped: 39 steps for 5000 images, 117 for 15000); the update variants use 1024 calibration
images (BN re-estimated after); top-1 on {args.test_subset} test images. "layers kept": binary layers whose
update was accepted. Whole run: {(time.perf_counter() - began) / 60:.1f} min.

{markdown_table(["fine-tune images", "update after", "layers kept", "top-1"], rows)}
"""
    print(body)
    write_section("quant-altupdate", body)


if __name__ == "__main__":
    main()
