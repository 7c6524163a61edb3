"""Lightweight students on fashion-mnist-32, alone and distilled with each loss, at one budget and seed.

    python benchmarks/distill_students.py [--students lenet5,shufflenetv2,mobilenetv2] [--threads 1]

The teacher is a width-0.25 vgg14: the one trained here earlier (kept in
benchmarks/out/, so every student learns from the same teacher), else the one
benchmarks/baselines.py trained, else one trained now on a class-balanced
subset (``--teacher-subset``, ``--teacher-epochs``).
Each student is trained once alone (cross-entropy) and once with every
registered distillation loss, from the same initial weights, on the same
class-balanced subset with the same seed, schedule and augmentation, so the
only difference is the loss.  The teacher's logits come from an on-disk cache
after the first distilled run (same seed, so the same augmented batches).
Results go to benchmarks/out/distill/ (one JSON per student) and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from common import ROOT, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import load_dataset
from torchslim.distill import DistillConfig, create_student, distill, list_losses
from torchslim.io import atomic_write_text
from torchslim.profile import count_macs, count_params
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
RESULTS = os.path.join(OUT, "distill")
CACHE = os.path.join(OUT, "distill-cache")

# name -> (width_mult, training subset, epochs): the student budget, sized for a shared 2-core CPU.
STUDENTS = {
    "lenet5": (1.0, 10000, 6),
    "shufflenetv2": (0.25, 3000, 5),
    "mobilenetv2": (0.25, 2000, 5),
    "shallow2": (0.5, 10000, 6),
}


def baseline_teacher_path() -> str | None:
    try:
        from baselines import model_path

        path = model_path("vgg14")
    except Exception:  # baselines.py absent or changed: fall back to our own teacher
        return None
    return path if os.path.exists(path) and os.path.exists(path + ".json") else None


def get_teacher(args, train, test):
    own = os.path.join(OUT, f"distill-teacher-vgg14-w0.25-n{args.teacher_subset}-e{args.teacher_epochs}.safetensors")
    path = None if os.path.exists(own) else baseline_teacher_path()  # once trained here, keep one teacher
    if path:
        teacher = torchslim.load(path)
        return teacher, {"path": os.path.relpath(path, ROOT), "budget": "benchmarks/baselines.py (full 60k, 10 epochs)",
                         "top1": evaluate(teacher, test)["top1"]}
    path = own
    budget = f"vgg14 width 0.25, {args.teacher_subset} training images, {args.teacher_epochs} epochs, seed 0"
    if not os.path.exists(path):
        torch.manual_seed(0)
        teacher = models.create("vgg14", num_classes=10, in_channels=3, width_mult=0.25, input_size=(32, 32))
        config = TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.05, seed=0)
        began = time.perf_counter()
        fit(teacher, train.subset(args.teacher_subset), config, checkpoint_path=path + ".ckpt")
        print(f"teacher trained in {time.perf_counter() - began:.0f} s", flush=True)
        torchslim.save(teacher, path, data="fashion-mnist-32", train=config.to_dict(), budget=budget)
        if os.path.exists(path + ".ckpt"):
            os.remove(path + ".ckpt")
    teacher = torchslim.load(path)
    return teacher, {"path": os.path.relpath(path, ROOT), "budget": budget, "top1": evaluate(teacher, test)["top1"]}


def run_student(name: str, teacher, train, test, seed: int) -> dict:
    width, subset, epochs = STUDENTS[name]
    data = train.subset(subset)
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, seed=seed)
    torch.manual_seed(seed)
    initial = create_student(name, teacher, width_mult=width)
    result = {"student": name, "width_mult": width, "subset": subset, "epochs": epochs, "seed": seed,
              "params": count_params(initial), "macs": count_macs(initial, (3, 32, 32)), "runs": {}}
    kinds = [("alone", None)] + [(loss, DistillConfig(loss=loss, cache_dir=CACHE)) for loss in list_losses()]
    for label, kd in kinds:
        student = copy.deepcopy(initial)
        began = time.perf_counter()
        if kd is None:
            fit(student, data, config, progress=False)
            extra = {}
        else:
            trained = distill(student, kd, data, teacher=teacher, train_config=config, progress=False)
            student, history = trained.model, trained.history
            extra = {"temperature": kd.temperature, "alpha": kd.alpha, "cache_hit_rate": history["cache"]["hit_rate"]}
        top1 = evaluate(student, test)["top1"]
        result["runs"][label] = {"top1": top1, "seconds": time.perf_counter() - began, **extra}
        print(f"{name} {label}: top-1 {top1:.4f} ({time.perf_counter() - began:.0f} s)", flush=True)
    return result


def result_path(name: str, seed: int) -> str:
    return os.path.join(RESULTS, f"{name}.json" if seed == 0 else f"{name}-seed{seed}.json")


def section(teacher_info: dict, threads: int) -> str:
    results = [json.load(open(os.path.join(RESULTS, f))) for f in sorted(os.listdir(RESULTS)) if f.endswith(".json")]
    results.sort(key=lambda r: (list(STUDENTS).index(r["student"]) if r["student"] in STUDENTS else 99, r["seed"]))
    losses = list_losses()
    rows = []
    commands = []
    for r in results:
        command = f"python benchmarks/distill_students.py --students {r['student']}" + (
            f" --seed {r['seed']}" if r["seed"] else "")
        commands.append(f"`{command}` ({sum(run['seconds'] for run in r['runs'].values()):.0f} s)")
        alone = r["runs"]["alone"]["top1"]
        cells = [f"{r['runs'][loss]['top1']:.4f} ({100 * (r['runs'][loss]['top1'] - alone):+.2f})"
                 if loss in r["runs"] else "-" for loss in losses]
        rows.append([r["student"], r["width_mult"], f"{r['params']:,}", f"{r['macs']:,}", r["subset"], r["epochs"],
                     r["seed"], f"{alone:.4f}", *cells])
    settings = ", ".join(f"{loss}: T={DistillConfig(loss=loss).temperature:g}, alpha={DistillConfig(loss=loss).alpha:g}"
                         for loss in losses)
    return "\n".join([
        "## Distillation: lightweight students with a vgg14 teacher (fashion-mnist-32)",
        "",
        f"Commands, one per row (wall time of its four trainings): {'; '.join(commands)}.  ",
        f"Hardware: {hardware()}  ",
        f"Teacher: `{teacher_info['path']}` ({teacher_info['budget']}), test top-1 {teacher_info['top1']:.4f}.  ",
        "Student budget: a class-balanced subset of the training images (column `train n`), batch 128, SGD "
        "lr 0.05 one-cycle, crop and flip; every run of a student starts from the same weights (drawn with the "
        "row's seed) and "
        f"sees the same batches. Top-1 on the full 10k test set. {threads} torch thread(s).  ",
        f"Loss settings (the registry's defaults): {settings}. In brackets: points over the student alone. "
        "The first distilled run of a row also fills the teacher-logit cache; the other two read it "
        "(no teacher forward).",
        "",
        markdown_table(["student", "width", "params", "MACs", "train n", "epochs", "seed", "alone", *losses], rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default="lenet5,shufflenetv2,mobilenetv2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-subset", type=int, default=20000)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--teacher-only", action="store_true", help="train/check the teacher and stop")
    parser.add_argument("--report-only", action="store_true", help="rewrite the BENCHMARKS.md section and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(RESULTS, exist_ok=True)
    train, test = load_dataset("fashion-mnist-32", "train"), load_dataset("fashion-mnist-32", "test")
    teacher, teacher_info = get_teacher(args, train, test)
    print(f"teacher {teacher_info['path']}: top-1 {teacher_info['top1']:.4f}", flush=True)
    if args.teacher_only:
        return
    if args.report_only:
        write_section("distill-students", section(teacher_info, args.threads))
        return
    for name in args.students.split(","):
        result = run_student(name, teacher, train, test, args.seed)
        result["teacher"] = teacher_info
        atomic_write_text(result_path(name, args.seed), json.dumps(result, indent=2))
        write_section("distill-students", section(teacher_info, args.threads))


if __name__ == "__main__":
    main()
