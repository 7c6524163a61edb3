"""Trained binary models against the int8 runtimes of their own float model: top-1 and latency in one run.

    python benchmarks/binary_trained.py benchmarks/out/binary-accuracy-vgg14-w0.5.json [more.json ...]

Each JSON is a run of benchmarks/binary_accuracy.py (it records the files it wrote).  Per run:
its float model (the one fine-tuned alike, or the base where a run kept no other) on eager
torch, ONNX Runtime fp32 and static int8 (QDQ, per-channel) and OpenVINO fp32 and int8 (NNCF),
both int8 calibrated on 256 training images; each binary model from its packed file, compiled
to the packed kernels.  Top-1 of every model on its runtime, on the whole test set; latency at
batch 1, 1 and 2 threads, all contenders of a run alternating in blocks (deploy.bench.compare_blocks).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from common import OtherLoad, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim.data import BatchLoader, calibration_images, load_dataset
from torchslim.deploy import build, compile
from torchslim.deploy.bench import compare_blocks
from torchslim.export import openvino as ov_runtime
from torchslim.export.frozen import load_frozen
from torchslim.profile import ort

SHAPE = (3, 32, 32)


@torch.no_grad()
def top1(model, test, batch: int) -> float:
    correct = 0
    for x, y in BatchLoader(test, batch_size=batch):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(test)


def contenders(run: dict, calibration: torch.Tensor, threads: tuple) -> tuple[dict, dict, str]:
    """{(label, threads): module}, {label: (module at 1 thread, batch for its top-1)} and the float row's name."""
    rows = run["rows"]
    floats = [r for r in rows if r["label"] == "float, fine-tuned alike" and r.get("path")]
    floats = floats or [r for r in rows if r["label"] == "float (base)" and r.get("path")]
    if not floats:
        raise SystemExit(f"{run['args']['json']}: no float model file recorded (rerun binary_accuracy.py)")
    float_row = floats[0]
    float_model = torchslim.load(float_row["path"]).eval()
    f32 = ort.export_onnx_bytes(float_model, SHAPE)
    i8 = ort.quantize_qdq(f32, calibration)
    ov_f32, ov_i8 = ov_runtime.runtime_pair(float_model, SHAPE, calibration)
    found = {}
    for t in threads:
        found["ORT fp32", t] = ort.OrtModule(f32, t)
        found["ORT int8", t] = ort.OrtModule(i8, t)
        found["OV fp32", t] = ov_runtime.OpenVinoModule(ov_f32, t)
        found["OV int8", t] = ov_runtime.OpenVinoModule(ov_i8, t)
    scored = {"float (torch)": (float_model, 500), "ORT int8": (found["ORT int8", threads[0]], 1),
              "OV int8": (found["OV int8", threads[0]], 1)}
    for row in rows:
        if row["label"].startswith("bireal") and row.get("path") and os.path.exists(row["path"]):
            frozen = load_frozen(row["path"])
            for t in threads:
                found[row["label"], t] = compile(frozen, threads=t)
            scored[row["label"]] = (found[row["label"], threads[0]], 500)
    return found, scored, float_row["label"]


def timed(found: dict, repeats: int) -> dict:
    named = {f"{r}@{t}": m for (r, t), m in found.items()}
    result = compare_blocks(named, SHAPE, 1, max(t for _, t in found), repeats=repeats)
    return {key: result[f"{key[0]}@{key[1]}"]["median_ms"] for key in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by binary_accuracy.py")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--section", default="binary-trained")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    ov_runtime.require("this benchmark")
    torch.set_num_threads(1)
    threads = (1, 2)
    train = load_dataset("fashion-mnist-32", "train", subset=2000)
    test = load_dataset("fashion-mnist-32", "test")
    calibration = torch.cat(calibration_images(train, 256))
    table, speed = [], []
    with OtherLoad() as load:
        for path in args.runs:
            with open(path) as handle:
                run = json.load(handle)
            name = f"{run['args']['model']} w{run['args']['width']}"
            found, scored, float_label = contenders(run, calibration, threads)
            accuracy = {label: top1(model, test, batch) for label, (model, batch) in scored.items()}
            ms = timed(found, args.repeats)
            for label, value in accuracy.items():
                table.append([name, label, f"{value:.4f}", f"{100 * (value - accuracy['float (torch)']):+.2f}"])
            binaries = [label for label in scored if label.startswith("bireal")]
            for label in binaries:
                for t in threads:
                    speed.append([name, label, t, *(f"{ms[r, t]:.3f}" for r in ("ORT fp32", "ORT int8", "OV fp32",
                                                                                  "OV int8")),
                                  f"{ms[label, t]:.3f}", f"**{ms['OV int8', t] / ms[label, t]:.2f}x**",
                                  f"{ms['ORT int8', t] / ms[label, t]:.2f}x", f"**{ms['ORT fp32', t] / ms[label, t]:.2f}x**"])
            print(json.dumps({"run": name, "top1": accuracy, "ms": {f"{k[0]}@{k[1]}": v for k, v in ms.items()}}),
                  flush=True)
    body = "\n".join([
        "## Trained binary models against the int8 runtimes of their float model (top-1 and latency, one run)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; load during the run: {load.describe()}.  ",
        f"ISA paths: torchslim {build.isa()}; OpenVINO and ONNX Runtime pick their own.  ",
        ("The models binary_accuracy.py trained and saved: per network, its float model (fine-tuned with the "
         "binary models' budget; the base where the run kept no other) on each runtime, int8 calibrated on 256 "
         "training images, and each binary model from its packed file, compiled. Top-1 on the 10k test images "
         f"through the runtime itself; latency at batch 1, median ms of {args.repeats} calls in blocks of 5, every "
         f"contender of a network interleaved. Float row: {float_label}."),
        "",
        markdown_table(["network", "model (runtime)", "top-1", "points vs float"], table),
        "",
        markdown_table(["network", "binary model", "threads", "ORT fp32", "ORT int8", "OV fp32", "OV int8",
                        "binary ms", "vs OV int8", "vs ORT int8", "vs ORT fp32"], speed),
    ])
    if not args.no_write:
        write_section(args.section, body)
    print(body)


if __name__ == "__main__":
    main()
