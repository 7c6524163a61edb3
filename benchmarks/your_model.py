"""Your own model, in four commands, on a real folder of images: the figures beside README's path.

    python benchmarks/your_model.py [--per-class 200,50] [--size 32] [--train-epochs 3] [--finetune-epochs 1]

Writes Fashion-MNIST out as PNG files (``DIR/train/<class>/*.png``, ``DIR/test/<class>/*.png``; the
first N training and M test images of each class), trains a torchvision resnet18 on that folder and
saves its weights the way a DataParallel training script does (``{"state_dict": {"module." + key:
tensor}}``, a ``.pth``).  Then runs the four commands of README's "your own model" path, each as a
user would (``python -m torchslim ... --json``), with every other option at its default:

    torchslim import torchvision:resnet18 --weights my-weights.pth --num-classes 10 --input 3xSxS --out base
    torchslim prune base --target-macs 0.5 --finetune-epochs E --data folder:DIR --out pruned
    torchslim quantize pruned --method int8 --data folder:DIR --out pruned-int8.onnx
    torchslim export pruned --format onnx --out pruned.onnx

Top-1 is measured on the folder's test images (``torchslim eval`` for the imported model), file sizes
are the bytes on disk, and latency is batch 1 on one thread, interleaved in one run: the imported
model against the pruned one in eager torch, and both ONNX files against the imported model's ONNX
in ONNX Runtime.  Writes the ``your-model`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from PIL import Image

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim.data import load_dataset
from torchslim.profile import compare_latency, ort

THREADS = 1


def write_folder(root: str, per_class: dict) -> None:
    """Fashion-MNIST's first images of each class as PNG files under root/<split>/<class>/."""
    for split, count in per_class.items():
        data = load_dataset("fashion-mnist", split)
        taken = dict.fromkeys(range(len(data.classes)), 0)
        for index, label in enumerate(data.labels.tolist()):
            if taken[label] >= count:
                continue
            folder = os.path.join(root, split, data.classes[label].replace("/", "-"))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(data.images[index, 0].numpy()).save(os.path.join(folder, f"{index:05d}.png"))
            taken[label] += 1


def torchslim_cli(*args) -> dict:
    """``python -m torchslim ARGS --json``; its JSON line (stops the benchmark on a failure)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torchslim", *map(str, args), "--json"], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"torchslim {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    payload["wall_s"] = time.perf_counter() - began
    print(f"torchslim {args[0]}: {payload['wall_s']:.0f} s", flush=True)
    return payload


def user_checkpoint(folder: str, data: str, args, work: str) -> str:
    """A resnet18 trained on the folder, saved as a DataParallel script saves it."""
    trained = os.path.join(work, "trained.safetensors")
    torchslim_cli("train", "--model", "torchvision:resnet18", "--data", data, "--image-size", args.size,
                  "--epochs", args.train_epochs, "--lr", 0.05, "--out", trained)
    state = torchslim.load(trained).state_dict()
    path = os.path.join(work, "my-weights.pth")
    torch.save({"epoch": args.train_epochs, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def latencies(base_file: str, pruned_file: str, onnx: dict, shape) -> dict:
    """Batch-1 medians: eager base vs pruned, then ONNX Runtime base vs pruned vs pruned int8."""
    eager = compare_latency({"base": torchslim.load(base_file).eval(), "pruned": torchslim.load(pruned_file).eval()},
                            shape, threads=THREADS, repeats=40, block=5)
    sessions = {name: ort.OrtModule(open(path, "rb").read(), THREADS) for name, path in onnx.items()}
    runtime = compare_latency(sessions, shape, threads=THREADS, repeats=40, block=5)
    return {"eager": {k: eager[k]["median_ms"] for k in ("base", "pruned")},
            "ort": {k: runtime[k]["median_ms"] for k in sessions}}


def run(args, work: str) -> tuple[list, dict]:
    folder = os.path.join(work, "fashion")
    per_class = dict(zip(("train", "test"), (int(n) for n in args.per_class.split(","))))
    write_folder(folder, per_class)
    data, shape = f"folder:{folder}", (3, args.size, args.size)
    weights = user_checkpoint(folder, data, args, work)
    files = {name: os.path.join(work, name) for name in
             ("base.safetensors", "pruned.safetensors", "pruned-int8.onnx", "pruned.onnx", "base.onnx")}
    steps = {
        "import": torchslim_cli("import", "torchvision:resnet18", "--weights", weights, "--num-classes", 10,
                                "--input", "x".join(map(str, shape)), "--out", files["base.safetensors"]),
        "eval": torchslim_cli("eval", files["base.safetensors"], "--data", data),
        "prune": torchslim_cli("prune", files["base.safetensors"], "--target-macs", 0.5, "--finetune-epochs",
                               args.finetune_epochs, "--data", data, "--out", files["pruned.safetensors"]),
        "quantize": torchslim_cli("quantize", files["pruned.safetensors"], "--method", "int8", "--data", data,
                                  "--out", files["pruned-int8.onnx"]),
        "export": torchslim_cli("export", files["pruned.safetensors"], "--format", "onnx",
                                "--out", files["pruned.onnx"]),
    }
    torchslim_cli("export", files["base.safetensors"], "--format", "onnx", "--out", files["base.onnx"])
    ms = latencies(files["base.safetensors"], files["pruned.safetensors"],
                   {"base": files["base.onnx"], "pruned": files["pruned.onnx"], "int8": files["pruned-int8.onnx"]},
                   shape)
    sizes = {name: os.path.getsize(path) for name, path in files.items()}
    return _rows(steps, sizes, ms), {"per_class": per_class, "shape": shape}


def _rows(steps: dict, sizes: dict, ms: dict) -> list:
    imp, ev, pr, qu, ex = (steps[k] for k in ("import", "eval", "prune", "quantize", "export"))
    mb = 1e-6
    return [
        ["import", f"{imp['tensors_loaded']} tensors loaded"
                   f"{', new 10-class head' if imp['head_replaced'] else ''}; top-1 {ev['top1']:.3f}", f"{sizes['base.safetensors'] * mb:.1f} MB", "-", f"{imp['wall_s']:.0f}"],
        ["prune", f"MACs {pr['macs_before'] / 1e6:.1f}M -> {pr['macs_after'] / 1e6:.1f}M (round-to {pr['round_to']}), "
                  f"params {pr['params_before'] / 1e6:.2f}M -> {pr['params_after'] / 1e6:.2f}M; "
                  f"top-1 {pr['top1_before']:.3f} -> {pr['top1_after']:.3f}",
         f"{sizes['pruned.safetensors'] * mb:.1f} MB",
         f"eager {ms['eager']['base'] / ms['eager']['pruned']:.2f}x faster", f"{pr['wall_s']:.0f}"],
        ["quantize int8", f"top-1 {qu['top1_before']:.3f} -> {qu['top1_after']:.3f}",
         f"{sizes['pruned-int8.onnx'] * mb:.1f} MB",
         f"ONNX Runtime {ms['ort']['base'] / ms['ort']['int8']:.2f}x faster than the imported model's ONNX",
         f"{qu['wall_s']:.0f}"],
        ["export onnx", f"max abs difference to torch {ex['max_abs_diff']:.1e}", f"{sizes['pruned.onnx'] * mb:.1f} MB",
         f"ONNX Runtime {ms['ort']['base'] / ms['ort']['pruned']:.2f}x faster than the imported model's ONNX",
         f"{ex['wall_s']:.0f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", default="200,50", help="training and test images per class")
    parser.add_argument("--size", type=int, default=32, help="input side (32: in memory; 64 and up: streamed)")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of the user's own training")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="prune's --finetune-epochs")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchslim-your-model-") as work:
        rows, setting = run(args, work)
    train, test = setting["per_class"]["train"], setting["per_class"]["test"]
    body = "\n".join([
        "## Your own model: torchvision resnet18 on a folder of PNG images, in four commands",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Data: Fashion-MNIST written out as PNG files, {train} training and {test} test images per class "
        f"({10 * train:,} / {10 * test:,}), read at {'x'.join(map(str, setting['shape']))}. The weights: a "
        f"torchvision resnet18 trained {args.train_epochs} epochs on that folder, saved as "
        "`{\"state_dict\": {\"module.\" + key: tensor}}`. Each step is the README's command with its defaults "
        f"(prune: --target-macs 0.5, {args.finetune_epochs} fine-tune epoch(s)). Top-1 on the {10 * test:,} test "
        f"images; latency at batch 1, {THREADS} thread, interleaved in one run per runtime. "
        f"Whole run {(time.perf_counter() - began) / 60:.1f} min.",
        "",
        markdown_table(["step", "result", "file", "latency", "wall s"], rows),
    ])
    print(body)
    write_section("your-model", body)


if __name__ == "__main__":
    main()
