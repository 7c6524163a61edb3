"""``torchslim demo``: the README's main job, end to end in minutes.

Trains (or reuses) a reduced-width VGG14 on fashion-mnist-32, then runs three
short recipes from it (Taylor pruning, HWGQ + BWN binarization, distillation
into a thin VGG14), times the four models side by side, prints the comparison
table and writes one report.  Falls back to sklearn's digits, and says so, when
Fashion-MNIST is not installed.
"""

from __future__ import annotations

import json
import os
import time

from ..errors import UserError
from ..checks import THREADS
from ..checks import WIDTH as WIDTH_ARG
from ..flags.common import add_json_arg
from .common import emit

INT8_KEYS = ("int8", "openvino_int8")  # the int8 runtimes among RUNTIMES
WIDTH = 0.25  # the baseline VGG14's default width_mult: small enough for a run of minutes on 2 cores

DEMO_RECIPES = (("taylor", "pruned (Taylor, 50% MACs)"), ("hwgq-bwn", "binary (HWGQ + BWN)"),
                ("kd", "student (thin VGG14 KD)"))


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="train a baseline, compress it three ways, report")
    parser.add_argument("--out", default="demo-out", help="output folder (rerun to reuse and resume)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (about two minutes; for checks)")
    parser.add_argument("--threads", type=THREADS, default=1, help="threads for the latency measurements")
    parser.add_argument("--width-mult", type=WIDTH_ARG, default=WIDTH,
                        help=f"the baseline VGG14's width (default {WIDTH}; wider: slower training, binary layers "
                             "a larger share of the time)")
    add_json_arg(parser)
    parser.set_defaults(run=run, out_is_folder=True)


def _data_name() -> str:
    from ..data import load_dataset  # lazy: loads when the verb runs

    try:
        load_dataset("fashion-mnist-32", "test", subset=10)
        return "fashion-mnist-32"
    except UserError as exc:
        print(f"Fashion-MNIST is not available ({exc}); using sklearn digits instead.")
        return "digits-32"


def train_base(out: str, data: str, quick: bool, log=print, width: float = WIDTH) -> str:
    """The baseline VGG14 of width ``width``, trained once and cached in ``out``."""
    from .. import models, save  # lazy: loads when the verb runs
    from ..data import load_dataset  # lazy: loads when the verb runs
    from ..train import TrainConfig, fit  # lazy: loads when the verb runs
    from ..train.loop import seed_everything  # lazy: loads when the verb runs

    subset = 500 if quick else (20000 if data.startswith("fashion") else None)
    epochs = 1 if quick else 2
    path = os.path.join(out, f"base-vgg14-w{width}-{data}-n{subset or 'all'}-e{epochs}.safetensors")
    if os.path.exists(path):
        log(f"reusing the trained baseline {path}")
        return path
    train_set = load_dataset(data, "train", subset=subset)
    log(f"training the baseline vgg14 (width {width}) on {data}: {len(train_set)} images, {epochs} epoch(s)")
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, schedule="onecycle", seed=0)
    seed_everything(0)
    model = models.create("vgg14", num_classes=train_set.num_classes, in_channels=train_set.input_shape[0],
                          width_mult=width)
    fit(model, train_set, config, checkpoint_path=path + ".ckpt")
    save(model, path, data=data, train=config.to_dict(), input_shape=train_set.input_shape,
         num_classes=train_set.num_classes)
    os.remove(path + ".ckpt")
    return path


def verdict(table: list[dict]) -> dict:
    """What the table says: the binary row against the fastest int8 of the original, the pruned
    row's speed-up on each int8 runtime, and the largest top-1 loss of a compressed row."""
    from ..report.format import RUNTIMES  # lazy: the report package loads torch; parsing the CLI stays cheap

    original, pruned, binary = table[0], table[1], table[2]
    int8 = {k: original["latency_ms"].get(k) for k in INT8_KEYS if original["latency_ms"].get(k) is not None}
    best = min(int8, key=int8.get) if int8 else None
    binary_ms = binary["latency_ms"].get("binary")
    return {
        "best_int8_of_original": {"runtime": RUNTIMES[best], "ms": int8[best]} if best else None,
        "binary_vs_best_int8": round(int8[best] / binary_ms, 3) if best and binary_ms else None,
        "pruned_speedup": {RUNTIMES[k]: round(original["latency_ms"][k] / pruned["latency_ms"][k], 3)
                           for k in ("float", *INT8_KEYS)
                           if original["latency_ms"].get(k) and pruned["latency_ms"].get(k)},
        "max_top1_loss": round(max(original["top1"] - row["top1"] for row in table[1:]), 4),
    }


def verdict_lines(found: dict) -> list[str]:
    lines = []
    if found["binary_vs_best_int8"] is not None:
        best = found["best_int8_of_original"]
        word = "faster" if found["binary_vs_best_int8"] >= 1 else "SLOWER"
        lines.append(f"binary row on torchslim binary kernels: {found['binary_vs_best_int8']:.2f}x the speed of the "
                     f"original's best int8 ({best['runtime']}, {best['ms']:.3f} ms): {word}")
    if found["pruned_speedup"]:
        lines.append("pruned row against the original on the same runtime: " + ", ".join(
            f"{name} {ratio:.2f}x" for name, ratio in found["pruned_speedup"].items()))
    lines.append(f"largest top-1 loss of a compressed row: {found['max_top1_loss'] * 100:.2f} points")
    return lines


def _combined_report(reports: dict, base_path: str, out: str, data: str, threads: int, quick: bool, log,
                     width: float = WIDTH) -> dict:
    """One table for the four models, timed side by side in one interleaved run."""
    import torch  # lazy: loads when the verb runs

    from .. import load  # lazy: loads when the verb runs
    from ..data import load_dataset  # lazy: loads when the verb runs
    from ..io import atomic_write_text  # lazy: loads when the verb runs
    from ..pipeline.measure import measure_latency  # lazy: loads when the verb runs
    from ..profile.hardware import hardware  # lazy: loads when the verb runs
    from ..data.calibration import calibration_images  # lazy: loads when the verb runs
    from ..report import render_html  # lazy: loads when the verb runs

    first = next(iter(reports.values()))
    models = {"original": load(base_path)}
    models.update({label: load(os.path.join(r["out_dir"], "model.safetensors")) for label, r in reports.items()})
    calibration = torch.cat(calibration_images(load_dataset(data, "train", subset=256 if quick else 1000), 64))
    log("timing the four models on every runtime, side by side (batch 1, interleaved)")
    load_before = os.getloadavg()[0]
    latency, runtimes = measure_latency(models, tuple(models["original"].input_shape), calibration,
                                        threads=threads, repeats=10 if quick else 30, openvino=None)
    table = [{**first["table"][0], "model": "original", "latency_ms": latency["original"]}]
    for label, r in reports.items():
        table.append({**r["table"][1], "model": label, "latency_ms": latency[label]})
    taylor = reports[DEMO_RECIPES[0][1]]
    report = {"title": "torchslim demo", "summary": f"A width-{width} VGG14 compressed three ways: structured "
              "pruning, binarization and distillation.", "data": data, "hardware": hardware(),
              "threads": threads, "seconds": round(sum(r["seconds"] for r in reports.values()), 1),
              "load": f"{load_before:.2f} -> {os.getloadavg()[0]:.2f} (1 min, {os.cpu_count()} CPUs)",
              "table": table, "runtimes": runtimes, "verdict": verdict(table),
              "stages": [s for r in reports.values() for s in r["stages"]],
              "pruning_rounds": taylor["pruning_rounds"], "channels": taylor["channels"],
              "sensitivity": taylor["sensitivity"],
              "recipes": {label: os.path.join(r["out_dir"], "report.html") for label, r in reports.items()}}
    if "openvino_int8" not in runtimes:
        report["note"] = "OpenVINO int8 not timed: not installed (pip install 'torchslim[openvino]')"
    atomic_write_text(os.path.join(out, "report.json"), json.dumps(report, indent=1) + "\n")
    render_html(report, os.path.join(out, "report.html"))
    return report


def _run_folder(name: str, args) -> str:
    """A recipe's folder: runs from another baseline width or budget never resume one another."""
    width = "" if args.width_mult == WIDTH else f"-w{args.width_mult}"
    return name + width + ("-quick" if args.quick else "")


def run(args) -> int:
    from ..pipeline import compress  # lazy: loads when the verb runs
    from ..pipeline.recipe import RECIPES_DIR  # lazy: loads when the verb runs
    from ..report.format import text_table  # lazy: loads when the verb runs

    began = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    data = _data_name()
    base = train_base(args.out, data, args.quick, width=args.width_mult)
    reports = {}
    for name, label in DEMO_RECIPES:
        print(f"\n== recipe {name}: {label}")
        reports[label] = compress(os.path.join(RECIPES_DIR, "demo", name + ".yaml"),
                                  os.path.join(args.out, _run_folder(name, args)), model=base,
                                  data=data, quick=args.quick, threads=args.threads)
    report = _combined_report(reports, base, args.out, data, args.threads, args.quick, print, args.width_mult)
    seconds = time.perf_counter() - began
    report["wall_seconds"] = round(seconds, 1)
    text = "\n".join(["", text_table(report["table"], report["runtimes"]), "", *verdict_lines(report["verdict"]),
                      *([report["note"]] if report.get("note") else []), f"load average {report['load']}",
                      f"done in {seconds / 60:.1f} min; report: {os.path.abspath(args.out)}/report.html "
                      "(each recipe's own report and model files are in its folder)"])
    emit(args, report, text)
    return 0
