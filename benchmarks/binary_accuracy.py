"""Binary networks against their float model on fashion-mnist-32, same data, same fine-tune budget.

    python benchmarks/binary_accuracy.py --model vgg14 --width 0.5 --train-subset 15000 --base-epochs 4 --epochs 4
    python benchmarks/binary_accuracy.py --model resnet18 --width 1.0 --seeds 0,1 --section binary-accuracy-resnet18
    python benchmarks/binary_accuracy.py --render benchmarks/out/binary_accuracy.json

Per seed: a float ``--model`` trained ``--base-epochs`` (SGD, one-cycle, the zoo recipe) is the
base.  Then, each for the same ``--epochs`` on the same images (Adam, cosine, no weight decay):

* "float, fine-tuned alike": the base fine-tuned;
* each ``--recipes`` entry: its ``bireal_*`` counterpart (a real shortcut, an input BN and
  RPReLU around every binary conv), started from the base's conv/BN/classifier weights,
  quantized with ``--method bireal`` (1-bit weights with a per-channel scale, sign activations;
  the ``a2-`` recipes: ``hwgq-zero-uniform-bwn``, 2-bit activations) and trained with the base
  as teacher.  ``two-step`` spends the first half of the epochs with quantized activations and
  float weights, the second half with binary weights too; ``one-step`` quantizes both at once;
  ``labels`` is ``one-step`` without the teacher.

Each binary model is frozen, written as a packed file and reloaded (its top-1 is that file's),
and compiled to the packed kernels: the compiled model's predictions must equal the frozen ones.
The JSON is rewritten after every row; ``--render`` writes the section from it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import BatchLoader, load_dataset
from torchslim.deploy import compile as compile_binary
from torchslim.distill import kd_loss_fn
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.io import atomic_write_text
from torchslim.models.bireal import float_ops, init_from_float
from torchslim.profile import count_macs, serialized_size
from torchslim.quant import QuantConfig, freeze, quantize
from torchslim.data import calibration_images
from torchslim.quant.altupdate import recalibrate_bn
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
BINARY_OF = {"vgg14": "bireal_vgg14", "resnet18": "bireal_resnet18"}
# recipe -> (method, activation bits, two steps, teacher)
RECIPES = {
    "two-step": ("bireal", 1, True, True),
    "one-step": ("bireal", 1, False, True),
    "labels": ("bireal", 1, False, False),
    "a2-one-step": ("hwgq-zero-uniform-bwn", 2, False, True),
    "a2-two-step": ("hwgq-zero-uniform-bwn", 2, True, True),
}


def finetune_config(args, seed, epochs=None):
    return TrainConfig(epochs=args.epochs if epochs is None else epochs, lr=args.lr, optimizer="adam",
                       weight_decay=0.0, schedule="cosine", seed=seed, device=args.device)


def base_path(args, seed) -> str:
    return os.path.join(OUT, f"binacc-base-{args.model}-w{args.width}-e{args.base_epochs}-n{args.train_subset}"
                             f"-s{seed}.safetensors")


def float_base(args, train, seed):
    path = base_path(args, seed)
    if os.path.exists(path):
        return torchslim.load(path)
    torch.manual_seed(seed)
    model = models.create(args.model, num_classes=10, width_mult=args.width)
    fit(model, train, TrainConfig(epochs=args.base_epochs, lr=0.05, seed=seed, device=args.device), progress=False)
    torchslim.save(model.cpu(), path)
    return model.cpu()


def train_binary(base, recipe, train, args, seed, batches):
    """The bireal counterpart of ``base`` trained by ``recipe``; returns (model, seconds per epoch)."""
    torch.manual_seed(seed)
    model = models.create(BINARY_OF[args.model], num_classes=10, width_mult=args.width)
    init_from_float(model, base)
    method, act_bits, two_step, teacher = RECIPES[recipe]
    loss_fn = kd_loss_fn(copy.deepcopy(base), temperature=args.temperature, alpha=args.alpha) if teacher else None
    stages = [(QuantConfig(method=method, act_bits=act_bits), args.epochs)]
    if two_step:  # activations first (weights float), then weights too
        first = args.epochs // 2
        stages = [(QuantConfig(method=method, act_bits=act_bits, weight="float"), first),
                  (QuantConfig(method=method, act_bits=act_bits), args.epochs - first)]
    seconds = []
    for config, epochs in stages:
        model = quantize(model, config)
        recalibrate_bn(model, batches)
        history = fit(model, train, finetune_config(args, seed, epochs), loss_fn=loss_fn, progress=False)
        model.cpu()
        seconds += [e["seconds"] for e in history["epochs"]]
    recalibrate_bn(model, batches)
    return model, sum(seconds) / len(seconds)


@torch.no_grad()
def predictions(model, test, batch=500):
    model.eval()
    return torch.cat([model(x).argmax(1) for x, _ in BatchLoader(test, batch_size=batch)])


def measure(label, model, test, path):
    """Top-1 of the packed file, and whether the compiled model predicts exactly as the frozen one."""
    save_frozen(freeze(model), path)
    return measure_file(label, path, test)


def measure_file(label, path, test):
    reloaded = load_frozen(path)
    top1 = evaluate(reloaded, test)["top1"]
    compiled = compile_binary(reloaded)
    same = bool(torch.equal(predictions(reloaded, test), predictions(compiled, test)))
    layers = len(getattr(compiled, "torchslim_meta", {}).get("compiled_layers", []))
    return {"label": label, "top1": top1, "bytes": os.path.getsize(path), "compiled_equal": same,
            "compiled_layers": layers}


def run_seed(args, seed, train, test, batches, rows, save):
    base = float_base(args, train, seed)
    float_bytes = serialized_size(base)
    rows.append({"label": "float (base)", "seed": seed, "top1": evaluate(base, test)["top1"], "bytes": float_bytes,
                 "path": base_path(args, seed)})
    tuned = copy.deepcopy(base)
    history = fit(tuned, train, finetune_config(args, seed), progress=False)
    tuned_path = os.path.join(OUT, f"binacc-float-{args.model}-w{args.width}-s{seed}.safetensors")
    torchslim.save(tuned.cpu(), tuned_path)  # timed against the binary models by binary_vs_openvino.py --trained
    rows.append({"label": "float, fine-tuned alike", "seed": seed, "top1": evaluate(tuned.cpu(), test)["top1"],
                 "bytes": float_bytes, "epoch_s": sum(e["seconds"] for e in history["epochs"]) / args.epochs,
                 "path": tuned_path})
    save()
    for recipe in args.recipes.split(","):
        model, epoch_s = train_binary(base, recipe, train, args, seed, batches)
        path = os.path.join(OUT, f"binacc-{args.model}-w{args.width}-{recipe}-s{seed}.packed.safetensors")
        label = f"bireal W1A{RECIPES[recipe][1]} {recipe.removeprefix('a2-')}"
        rows.append({**measure(label, model, test, path), "seed": seed, "epoch_s": epoch_s, "path": path})
        print(json.dumps(rows[-1]), flush=True)
        save()


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(BINARY_OF), default="vgg14")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--train-subset", type=int, default=15000)
    parser.add_argument("--base-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="fine-tune epochs, float and binary alike")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--recipes", default="two-step", help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="rows, rewritten after each (default benchmarks/out/...)")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--render", metavar="JSON", help="only write the section from a saved run")
    parser.add_argument("--measure", metavar="JSON", help="finish a saved run that stopped after writing a binary "
                        "model's packed file: measure each such file whose row is missing, then write the section")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default binary-accuracy-MODEL-wW)")
    args = parser.parse_args()
    if any(r not in RECIPES for r in args.recipes.split(",")):
        parser.error(f"--recipes takes {', '.join(RECIPES)}")
    args.section = args.section or f"binary-accuracy-{args.model}-w{args.width}"
    args.json = args.json or os.path.join(OUT, f"{args.section}.json")
    return args


def main():
    args = parse_args()
    if args.measure:
        finish_run(args)
        return
    if args.render:
        with open(args.render) as handle:
            saved = json.load(handle)
        # the section the run was made for, unless one is given now
        write_report(saved, args.section if "--section" in sys.argv else saved["args"]["section"])
        return
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train = load_dataset("fashion-mnist-32", "train", subset=args.train_subset)
    test = load_dataset("fashion-mnist-32", "test")
    batches = calibration_images(train, args.calib)
    binary = models.create(BINARY_OF[args.model], num_classes=10, width_mult=args.width)
    cost = {"float_macs": count_macs(models.create(args.model, num_classes=10, width_mult=args.width),
                                     (3, 32, 32)), **float_ops(binary)}
    began, rows = time.perf_counter(), []
    saved = {"rows": rows, "args": vars(args), "hardware": hardware(), "cost": cost, "command": command_line()}

    def save():
        saved["seconds"] = time.perf_counter() - began
        atomic_write_text(args.json, json.dumps(saved, indent=1))

    for seed in [int(s) for s in args.seeds.split(",")]:
        run_seed(args, seed, train, test, batches, rows, save)
    save()
    if not args.no_write:
        write_report(saved, args.section)


def finish_run(args) -> None:
    """The rows a run lost after training (it wrote each packed file before measuring it): measured from
    the files now, without their seconds per epoch."""
    with open(args.measure) as handle:
        saved = json.load(handle)
    run = argparse.Namespace(**saved["args"])
    test, measured = load_dataset("fashion-mnist-32", "test"), False
    for row in saved["rows"]:  # runs from before rows recorded their files
        if row["label"] == "float (base)" and "path" not in row and os.path.exists(base_path(run, row["seed"])):
            row["path"] = base_path(run, row["seed"])
    for seed in [int(s) for s in run.seeds.split(",")]:
        for recipe in run.recipes.split(","):
            label = f"bireal W1A{RECIPES[recipe][1]} {recipe.removeprefix('a2-')}"
            path = os.path.join(OUT, f"binacc-{run.model}-w{run.width}-{recipe}-s{seed}.packed.safetensors")
            done = [r for r in saved["rows"] if r["label"] == label and r["seed"] == seed]
            if not os.path.exists(path):
                continue
            if done:  # measured by the run itself; record its file when the run did not
                done[0].setdefault("path", path)
                continue
            saved["rows"].append({**measure_file(label, path, test), "seed": seed, "path": path})
            print(json.dumps(saved["rows"][-1]), flush=True)
            measured = True
    if measured:
        saved["command"] += f"; rows measured from the packed files by: {command_line()}"
        saved["finished_by_measure"] = True
    atomic_write_text(args.measure, json.dumps(saved, indent=1))
    if not args.no_write:
        write_report(saved, args.section if "--section" in sys.argv else saved["args"]["section"])


def _gaps(rows) -> list[list]:
    """One line per binary row: its top-1 and the gap to the fine-tuned float of its seed."""
    tuned = {r["seed"]: r["top1"] for r in rows if r["label"] == "float, fine-tuned alike"}
    out = []
    for r in rows:
        gap = f"{100 * (r['top1'] - tuned[r['seed']]):+.2f}" if r["label"].startswith("bireal") else "-"
        out.append([r["label"], r["seed"], f"{r['top1']:.4f}", gap, r["bytes"],
                    {True: "yes", False: "NO"}.get(r.get("compiled_equal"), "-"),
                    f"{r['epoch_s']:.0f}" if r.get("epoch_s") else "-"])
    return out


def _minutes(saved) -> str:
    if saved.get("finished_by_measure"):
        return (f"{saved['seconds'] / 60:.1f} min up to the last row it measured itself; the run stopped after "
                "writing the later packed files, measured afterwards by --measure (no seconds per epoch)")
    return f"{saved['seconds'] / 60:.1f} min"


def write_report(saved, section):
    args, cost = argparse.Namespace(**saved["args"]), saved["cost"]
    table = markdown_table(["model", "seed", "top-1 (packed file)", "points vs float fine-tuned", "file bytes",
                            "compiled = frozen", "s / epoch"], _gaps(saved["rows"]))
    title = (f"Binary accuracy: {BINARY_OF[args.model]} against float {args.model}, width {args.width}, "
             f"{args.epochs} epochs on {args.train_subset} images, Adam lr {args.lr}")
    body = f"""## {title}

Command: `{saved["command"]}`
Hardware: {saved["hardware"]}
Budget: float base {args.base_epochs} epochs (SGD one-cycle lr 0.05) on a {args.train_subset}-image class-balanced
subset; then {args.epochs} epochs for the float fine-tune and for each binary model alike (Adam lr {args.lr}, cosine,
no weight decay, crop+flip; the binary models distil from the float base, the "two-step" one with float weights
for the first half). Top-1 on the full 10k test set, binary models from their packed files; "compiled = frozen":
the packed-kernel model predicts every test image as the frozen model (with sign activations the two are
bit-identical; with 2-bit levels D * {{0..3}} the kernels' D * (integer sum) and the frozen float sum round
differently, and a level flipped downstream can change a prediction). Whole run: {_minutes(saved)}.
Compute per image: float {args.model} {cost["float_macs"] / 1e6:.1f}M MACs; the binary model's binary convs
{cost["binary_macs"] / 1e6:.1f}M binary MACs, plus {cost["float_ops"] / 1e6:.2f}M per-element float operations its
units add (input BN, output BN, shortcut add, RPReLU) beside the float stem and classifier.

{table}
"""
    write_section(section, body)


if __name__ == "__main__":
    main()
