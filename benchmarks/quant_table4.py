"""The HWGQ + BWN paper's Table 4 on vgg14 / fashion-mnist-32: every method, one budget.

    python benchmarks/quant_table4.py [--train-subset 10000] [--epochs 2] [--threads 1]
    python benchmarks/quant_table4.py --width 1.0 --device cuda --train-subset 60000 --json F --no-write
    python benchmarks/quant_table4.py --render F --section quant-table4-w1.0

It starts from ``--base`` when given; else at width 0.25 from the float vgg14 of
benchmarks/baselines.py when it exists (10 epochs); otherwise it trains its own float
base (``--width``, ``--base-epochs`` on the same training subset) and says so.
``--device cuda`` trains there (the packed files are still written and reloaded
through the CPU code); the JSON, rewritten
after every row, carries the hardware line, so ``--render`` writes the section on
another machine.  Each quantized row is ``quantize`` + ``fit`` for
the same ``--epochs`` on the same images (Adam, cosine, no weight decay, latent
weights clipped where the method needs it), then frozen, packed and evaluated on the
full 10k test set.  The alternating-update row starts from the HWGQ + BWN row.  The
float base gets the same fine-tune too ("float, fine-tuned alike"), so a gap to float
is not a gap in training.
Compression is the float file size over the packed file size (float32 side data).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import load_dataset
from torchslim.io import atomic_write_text
from torchslim.profile import serialized_size
from torchslim.quant import QuantConfig, clip_latent_weights, freeze, quantize
from torchslim.quant.altupdate import alternating_update, recalibrate_bn
from torchslim.data.calibration import calibration_images
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
ROWS = [  # (label, method, weight bits, act bits)
    ("BNN (deterministic)", "bnn", None, None),
    ("BNN (stochastic)", "bnn-stochastic", None, None),
    ("XNOR", "xnor", None, None),
    ("BWN", "bwn", None, None),
    ("TWN", "twn", None, None),
    ("DoReFa W1A2", "dorefa", 1, 2),
    ("HWGQ + BWN (W1A2)", "hwgq-bwn", 1, 2),
]


def base_model(args, train):
    if args.base:
        return torchslim.load(args.base), f"`{os.path.relpath(args.base, ROOT)}`"
    path = ""
    if args.width == 0.25:
        try:
            from baselines import model_path
            path = model_path("vgg14")
        except (ImportError, KeyError):
            pass
    if path and os.path.exists(path):
        return torchslim.load(path), f"benchmarks/baselines.py vgg14 ({os.path.basename(path)})"
    own = os.path.join(OUT, f"quant-base-vgg14-w{args.width}-e{args.base_epochs}-n{args.train_subset}.safetensors")
    if not os.path.exists(own):
        torch.manual_seed(0)
        model = models.create("vgg14", num_classes=10, width_mult=args.width)
        began = time.perf_counter()
        fit(model, train, TrainConfig(epochs=args.base_epochs, lr=0.05, seed=0, device=args.device), progress=False)
        print(f"float base trained in {time.perf_counter() - began:.0f} s", flush=True)
        torchslim.save(model.cpu(), own)
    return torchslim.load(own), (f"own float base: width {args.width}, {args.base_epochs} epochs SGD one-cycle "
                                 f"lr 0.05 on the {args.train_subset}-image subset")


def qat(base, method, wbits, abits, train, args, batches):
    config = QuantConfig(method=method, weight_bits=wbits, act_bits=abits)
    model = quantize(base, config)
    recalibrate_bn(model, batches)
    history = fit(model, train, TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0,
                                            schedule="cosine", seed=0, device=args.device),
                  on_step=clip_latent_weights, progress=False)
    recalibrate_bn(model, batches)
    return model, [e["seconds"] for e in history["epochs"]]


def measure(label, model, test, float_bytes, epoch_seconds, folder, device="cpu"):
    frozen = freeze(copy.deepcopy(model).cpu())
    path = os.path.join(folder, label.split(" ")[0].lower() + ".packed.safetensors")
    packed = save_frozen(frozen, path)
    top1_packed = evaluate(load_frozen(path).to(device), test, device=device)["top1"]
    return {"label": label, "top1": top1_packed, "packed_bytes": packed,
            "ratio": float_bytes / packed, "epoch_s": sum(epoch_seconds) / max(len(epoch_seconds), 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--qat-subset", type=int, default=None, help="images for the fine-tunes (default: all of the subset)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--base-epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="", help="comma-separated methods to run (default all)")
    parser.add_argument("--width", type=float, default=0.25, help="vgg14 width multiplier")
    parser.add_argument("--base", help="float vgg14 file to start from (default: the baselines' vgg14, else its own)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu or cuda")
    parser.add_argument("--json", default=os.path.join(OUT, "quant_table4.json"), help="rows, rewritten after each")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--render", metavar="JSON", help="only write the section from a saved run")
    parser.add_argument("--section", default="quant-table4", help="BENCHMARKS.md section to write")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as handle:
            saved = json.load(handle)
        write_report(saved["rows"], argparse.Namespace(**saved["args"]), saved["base"], saved["seconds"],
                     saved["hardware"], args.section)
        return
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    train = load_dataset("fashion-mnist-32", "train", subset=args.train_subset)
    test = load_dataset("fashion-mnist-32", "test")
    base, base_note = base_model(args, train)
    float_bytes = serialized_size(base)
    base.to(args.device)
    machine = hardware()
    if args.device.startswith("cuda"):
        machine += f"; training and evaluation on {torch.cuda.get_device_name()} (torch {torch.__version__})"
    if args.qat_subset:
        train = load_dataset("fashion-mnist-32", "train", subset=args.qat_subset)
    began = time.perf_counter()
    rows = []
    tuned = copy.deepcopy(base)  # the float row fine-tunes a copy with the same budget (epoch time)
    hist = fit(tuned, train, TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0,
                                         schedule="cosine", seed=0, device=args.device), progress=False)
    float_epoch = sum(e["seconds"] for e in hist["epochs"]) / args.epochs
    base_top1 = evaluate(base, test, device=args.device)["top1"]
    rows.append({"label": "float (base)", "top1": base_top1, "packed_bytes": float_bytes,
                 "ratio": 1.0, "epoch_s": float_epoch})
    rows.append({"label": "float, fine-tuned alike", "top1": evaluate(tuned, test, device=args.device)["top1"],
                 "packed_bytes": float_bytes, "ratio": 1.0, "epoch_s": float_epoch})
    selected = [r for r in ROWS if not args.rows or r[1] in args.rows.split(",")]
    batches = calibration_images(train, args.calib, device=args.device)

    def save():  # after every row, so a run cut short keeps what it finished
        atomic_write_text(args.json, json.dumps({"rows": rows, "args": vars(args), "base": base_note,
                                                 "hardware": machine, "seconds": time.perf_counter() - began},
                                                indent=1))

    for label, method, wbits, abits in selected:
        model, seconds = qat(base, method, wbits, abits, train, args, batches)
        rows.append(measure(label, model, test, float_bytes, seconds, OUT, args.device))
        print(json.dumps(rows[-1]), flush=True)
        save()
        if method == "hwgq-bwn":
            tuned, reports = alternating_update(model, batches, reference=base)
            rows.append(measure("HWGQ + BWN + alternating update", tuned, test, float_bytes, [], OUT, args.device))
            rows[-1]["layers"] = [r.to_dict() for r in reports]
            print(json.dumps(rows[-1]), flush=True)
            save()
    save()
    if not args.no_write:
        write_report(rows, args, base_note, time.perf_counter() - began, machine, args.section)


def write_report(rows, args, base_note, seconds, machine, section):
    float_epoch = rows[0]["epoch_s"]
    table = markdown_table(
        ["method", "top-1 (packed file)", "file bytes", "compression", "s / epoch", "epoch cost"],
        [[r["label"], f"{r['top1']:.4f}", r["packed_bytes"], f"{r['ratio']:.1f}x",
          f"{r['epoch_s']:.1f}" if r["epoch_s"] else "-",
          f"{r['epoch_s'] / float_epoch:.2f}x" if r["epoch_s"] else "-"] for r in rows])
    alt = next((r for r in rows if "layers" in r), None)
    layer_lines = ""
    if alt:
        layer_lines = "\n\nAlternating update, relative reconstruction error per layer (before -> after):\n\n" + \
            markdown_table(["layer", "before", "after", "iterations"],
                           [[x["name"], f"{x['error_before']:.4f}", f"{x['error_after']:.4f}", x["iterations"]]
                            for x in alt["layers"]])
    body = f"""## Quantization: the HWGQ + BWN paper's Table 4 on vgg14 (width {getattr(args, "width", 0.25)}) / fashion-mnist-32

Command: `{command_line()}`
Hardware: {machine}
Base: {base_note}. Float file {rows[0]['packed_bytes']} bytes.
Budget per quantized row: {args.epochs} epochs on a {args.qat_subset or args.train_subset}-image class-balanced subset of the
training set (Adam lr {args.lr}, cosine, no weight decay, crop+flip; BN statistics re-estimated on
{args.calib} training images before and after); top-1 is that of the model
reloaded from its packed file (BN folded, float32 side data), on the full 10k test set.
The alternating update uses {args.calib} training images and the float base as the target.
"epoch cost" is the mean QAT epoch time over the float fine-tune epoch time of the same run; epochs run
minutes apart on a shared machine, so use the interleaved quant-cost section for the training cost. Whole run: {seconds / 60:.1f} min.

{table}{layer_lines}
"""
    write_section(section, body)


if __name__ == "__main__":
    main()
