"""HWGQ + BWN against Brevitas W1A2 on the same work: one float base, same data, same epochs.

    python benchmarks/quant_brevitas.py --base FILE [--epochs 3] [--subset N] [--threads 1]

Both sides start from the same float model (a width-0.25 vgg14 by default) and train for
``--epochs`` on the same images with the same optimizer budget (Adam, cosine, no weight
decay, batch 128, crop and flip, seed 0):

* torchslim ``hwgq-bwn``: binary weights with a per-channel scale, 2-bit HWGQ activations with
  per-layer scales fitted on ``--calib`` training images, first and last layers float; then the
  alternating update; top-1 of the model reloaded from its packed file;
* Brevitas ``W1A2``: ``QuantConv2d`` with ``SignedBinaryWeightPerTensorConst`` (binary weights,
  constant per-tensor scale) and ``QuantReLU(bit_width=2)`` (2-bit unsigned activations with a
  learned per-tensor scale), first and last layers float.

Brevitas is a benchmark-only dependency (``pip install brevitas==0.13.4``); torchslim never
imports it.  Brevitas has no packed format, so both sides' bytes are counted alike (:func:`counted_bytes`);
ours also reports its packed file.
Each side's result is written to ``benchmarks/out/quant_brevitas.json`` as soon as it exists.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch
from torch import nn

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim.data import load_dataset
from torchslim.profile import serialized_size
from torchslim.quant import QuantConfig, clip_latent_weights, freeze, quantize
from torchslim.quant.altupdate import alternating_update
from torchslim.data.calibration import calibration_images
from torchslim.quant.calibrate import calibrate_act_scales
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
RESULTS = os.path.join(OUT, "quant_brevitas.json")


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0, schedule="cosine",
                       batch_size=128, seed=0)


def _packed_top1(model, test, path) -> tuple[float, int, int]:
    frozen = freeze(model)
    packed = save_frozen(frozen, path)
    return evaluate(load_frozen(path), test)["top1"], counted_bytes(frozen), packed


def run_ours(base, train, test, args) -> dict:
    batches = calibration_images(train, args.calib)
    model = quantize(base, QuantConfig(method=args.method, act_bits=2))
    row = {"side": f"torchslim {args.method}"}
    if args.ours_from:
        # Skip the fine-tune: reload the model a previous run saved after it.
        model.load_state_dict(torch.load(args.ours_from))
        row["epoch_s"] = json.load(open(args.ours_from + ".json"))["epoch_s"]
    else:
        row["act_scales"] = calibrate_act_scales(model, batches)  # re-estimates BN statistics too
        if args.alt_init:
            model, _ = alternating_update(model, batches, reference=base)
        loss_fn = None
        if args.teacher:
            from torchslim.distill import kd_loss_fn
            loss_fn = kd_loss_fn(copy.deepcopy(base), temperature=args.kd_temperature, alpha=args.kd_alpha)
        history = fit(model, train, train_config(args), checkpoint_path=args.checkpoint, loss_fn=loss_fn,
                      on_step=clip_latent_weights, progress=False)
        row["epoch_s"] = [e["seconds"] for e in history["epochs"]]
        state = os.path.join(OUT, "quant-brevitas-ours-finetuned.pt")
        torch.save(model.state_dict(), state)
        with open(state + ".json", "w") as handle:
            json.dump({"epoch_s": row["epoch_s"], "args": vars(args)}, handle)
    # The shipped recipe's product: the fine-tuned model, frozen and packed.
    row["top1"], row["bytes"], row["file_bytes"] = _packed_top1(model, test, os.path.join(
        OUT, "quant-brevitas-ours.packed.safetensors"))
    # Optional: the alternating update after the fine-tune, reported beside it.
    tuned, _ = alternating_update(model, batches, reference=base)
    row["top1_alt_after"], _, _ = _packed_top1(tuned, test, os.path.join(OUT, "quant-brevitas-ours-alt.packed.safetensors"))
    guarded, reports = alternating_update(model, batches, reference=base, guard=True,
                                          guard_batches=calibration_images(train, args.calib, skip=args.calib))
    row["top1_alt_guarded"], _, _ = _packed_top1(guarded, test, os.path.join(OUT, "quant-brevitas-ours-alt.packed.safetensors"))
    row["alt_guard_accepted"] = [r.name for r in reports if r.accepted]
    return row


def brevitas_w1a2(base: nn.Module) -> nn.Module:
    """The float VGG with binary convs (constant per-tensor scale) and 2-bit ReLUs; first/last float."""
    import brevitas.nn as qnn
    from brevitas.quant.binary import SignedBinaryWeightPerTensorConst

    model = copy.deepcopy(base)
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    for i, module in enumerate(list(model.features)):
        if isinstance(module, nn.Conv2d) and i != convs[0]:
            quant = qnn.QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                    module.padding, bias=module.bias is not None,
                                    weight_quant=SignedBinaryWeightPerTensorConst)
            quant.load_state_dict(module.state_dict(), strict=False)
            model.features[i] = quant
        elif isinstance(module, nn.ReLU):
            model.features[i] = qnn.QuantReLU(bit_width=2)
    return model


def counted_bytes(model: nn.Module) -> int:
    """Deployable bytes of either side, counted alike: 1 bit per binary weight plus a float32 scale
    and bias per binary output channel (BN folded), float32 first and last layers and the first
    BatchNorm, 4 bytes per activation quantizer (one per-tensor scale)."""
    from torchslim.quant import ActQuant, FrozenConv2d

    total = 0
    for module in model.modules():
        name = type(module).__name__
        if isinstance(module, FrozenConv2d) or name == "QuantConv2d":
            total += (module.weight.numel() + 7) // 8 + 2 * 4 * module.out_channels
        elif isinstance(module, ActQuant) or name == "QuantReLU":
            total += 4
        elif type(module) in (nn.Conv2d, nn.Linear):
            total += 4 * sum(p.numel() for p in module.parameters())
    first = next(m for m in model.features if isinstance(m, nn.BatchNorm2d))
    return total + 2 * 4 * first.num_features


def run_brevitas(base, train, test, args) -> dict:
    model = brevitas_w1a2(base)
    checkpoint = args.checkpoint and args.checkpoint + ".brevitas"
    history = fit(model, train, train_config(args), checkpoint_path=checkpoint, progress=False)
    return {"side": "Brevitas 0.13.4 W1A2", "top1": evaluate(model, test)["top1"], "bytes": counted_bytes(model),
            "epoch_s": [e["seconds"] for e in history["epochs"]]}


def _side(row: dict) -> str:
    return "ours" if row["side"].startswith("torchslim") else "brevitas"


def save_results(results: dict) -> None:
    with open(RESULTS, "w") as handle:
        json.dump(results, handle, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default=os.path.join(
        OUT, "shared", "base-vgg14-w0.25-e10-fashion-mnist-32.safetensors"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--method", default="hwgq-bwn", choices=("hwgq-bwn", "hwgq-zero-uniform-bwn"))
    parser.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--test-subset", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--teacher", action="store_true", help="distil ours from the float base")
    parser.add_argument("--kd-temperature", type=float, default=2.0)
    parser.add_argument("--kd-alpha", type=float, default=0.5, help="the teacher's share of the loss")
    parser.add_argument("--alt-init", action="store_true", help="alternating update before ours is fine-tuned too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sides", default="ours,brevitas")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--section", default="quant-brevitas", help="BENCHMARKS.md section to write")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="save ours' fine-tune after every epoch here (Brevitas': FILE.brevitas); a rerun resumes")
    parser.add_argument("--ours-from", default=None, metavar="STATE",
                        help="ours: reload the fine-tuned state a previous run saved instead of fine-tuning")
    parser.add_argument("--keep-rows", action="store_true",
                        help="keep the previous run's rows for the sides not run now (same settings)")
    parser.add_argument("--merge", default=None, metavar="JSON",
                        help="add the rows of the sides not run now from another run's results file (a run in "
                             "parallel with the same settings); with --sides '' only merges and writes the report")
    parser.add_argument("--lr-table", nargs="+", default=None, metavar="JSON",
                        help="only write a section comparing the learning rates of these runs' results files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # also what the hardware line of a merged or table-only report says
    if args.lr_table:
        write_lr_table(args.lr_table, args.section)
        return
    if args.merge:
        merge_results(args)
        return
    os.makedirs(OUT, exist_ok=True)
    base = torchslim.load(args.base)
    train = load_dataset("fashion-mnist-32", "train", subset=args.subset)
    test = load_dataset("fashion-mnist-32", "test", subset=args.test_subset)
    began = time.perf_counter()
    results = {"args": vars(args), "command": command_line(), "float_top1": evaluate(base, test)["top1"],
               "float_bytes": serialized_size(base), "rows": []}
    runners = {"ours": run_ours, "brevitas": run_brevitas}
    sides = args.sides.split(",")
    if args.keep_rows and os.path.exists(RESULTS):
        previous = json.load(open(RESULTS))
        results["rows"] = [row for row in previous["rows"] if _side(row) not in sides]
        results["minutes_previous"] = previous.get("minutes", 0.0)
    for side in sides:
        torch.manual_seed(0)
        results["rows"].append(runners[side](base, train, test, args))
        results["minutes"] = (time.perf_counter() - began) / 60
        print(json.dumps(results["rows"][-1]), flush=True)
        save_results(results)
        if not args.no_write:
            write_report(results, args.section)


# settings every side's rows depend on; ours also depend on _OURS
_SHARED = ("base", "epochs", "subset", "test_subset", "lr")
_OURS = ("method", "calib", "teacher", "kd_temperature", "kd_alpha", "alt_init")


def _check_same(runs: list[dict], what: str, skip: tuple = ()) -> None:
    """Stop unless the runs agree on the settings their rows depend on."""
    for keys, subset in ((_SHARED, runs), (_OURS, [r for r in runs if any(_side(x) == "ours" for x in r["rows"])])):
        for key in keys:
            values = {json.dumps(run["args"].get(key)) for run in subset}
            if key not in skip and len(values) > 1:
                raise SystemExit(f"{what}: the runs differ in {key}: {', '.join(sorted(values))}")


def merge_results(args) -> None:
    """This tree's results plus the other file's rows for the sides missing here, same settings checked."""
    mine, other = json.load(open(RESULTS)), json.load(open(args.merge))
    _check_same([mine, other], "--merge")
    have = {_side(row) for row in mine["rows"]}
    mine["rows"] += [row for row in other["rows"] if _side(row) not in have]
    mine["merged"] = {"sides": sorted({_side(r) for r in other["rows"]} - have), "command": other["command"]}
    if "ours" not in have and any(_side(r) == "ours" for r in other["rows"]):
        mine["ours_args"] = other["args"]  # ours' settings (teacher, alt-init, ...) come from the other run
    mine["minutes_previous"] = mine.get("minutes_previous", 0.0) + other.get("minutes", 0.0)
    save_results(mine)
    write_report(mine, args.section)


def write_lr_table(paths: list[str], section: str) -> None:
    """One row per (learning rate, side) from several runs that differ only in --lr and --sides."""
    runs = [json.load(open(path)) for path in paths]
    _check_same(runs, "--lr-table", skip=("lr",))
    ours = [run["args"] for run in runs if any(_side(row) == "ours" for row in run["rows"])]
    first = ours[0] if ours else runs[0]["args"]
    rows = sorted(([row["side"], run["args"]["lr"], f"{row['top1']:.4f}", f"`{run['command']}`"]
                   for run in runs for row in run["rows"]), key=lambda r: (r[0], r[1]))
    body = f"""## Quantization: learning rate of the 3-epoch fine-tune, HWGQ + BWN and Brevitas W1A2 (vgg14 width 0.25, {first['subset'] or 'all 60000'} training images)

Hardware: {hardware()}
Rows from `benchmarks/quant_brevitas.py` runs that differ only in `--lr` (and the side run); everything else as
in the Brevitas comparison above ({first['epochs']} epochs, Adam, cosine, batch 128, seed 0; ours: {first['method']},
{'alternating update first, ' if first['alt_init'] else ''}{'distilled from the float base, ' if first['teacher'] else ''}top-1 of the packed file; top-1 on {first['test_subset'] or 'the full 10k'} test images).  Single runs: seeds were not repeated.

{markdown_table(["side", "Adam lr", "top-1", "command"], rows)}
"""
    write_section(section, body)
    print(body)


def write_report(results: dict, section: str = "quant-brevitas") -> None:
    args = results["args"]
    ours = results.get("ours_args", args)  # a merged report: the settings of the run that made ours' rows
    rows = [["float base", f"{results['float_top1']:.4f}", results["float_bytes"], "-", "1.0x", "-"]]
    for row in results["rows"]:
        seconds = f"{sum(row['epoch_s']) / len(row['epoch_s']):.0f}"
        ratio = f"{results['float_bytes'] / row['bytes']:.1f}x"
        if "top1_alt_after" in row:
            rows.append([row["side"] + ", fine-tuned (packed file)", f"{row['top1']:.4f}", row["bytes"],
                         row["file_bytes"], ratio, seconds])
            rows.append([row["side"] + ", + alternating update after", f"{row['top1_alt_after']:.4f}", row["bytes"],
                         row["file_bytes"], ratio, "-"])
            if "top1_alt_guarded" in row:
                rows.append([row["side"] + f", + guarded update after ({len(row['alt_guard_accepted'])} layers kept)",
                             f"{row['top1_alt_guarded']:.4f}", row["bytes"], row["file_bytes"], ratio, "-"])
        else:
            rows.append([row["side"], f"{row['top1']:.4f}", row["bytes"], "-", ratio, seconds])
    minutes = results["minutes"] + results.get("minutes_previous", 0.0)
    merged = ""
    if "merged" in results:
        merged = (f"  \nRows of {', '.join(results['merged']['sides'])} from a run alongside with the same settings: "
                  f"`{results['merged']['command']}` (whole run: the two runs' minutes added)")
    # The epochs are in the title: runs that differ in budget are variants, not reruns of one claim.
    body = f"""## Quantization: HWGQ + BWN against Brevitas W1A2 (vgg14 width 0.25, fashion-mnist-32, {args['epochs']} epochs on {args['subset'] or 'all 60000'} training images, Adam lr {args['lr']})

Command: `{results['command']}`{merged}
Hardware: {hardware()} (a shared machine: other jobs ran alongside, so seconds are indicative)
Base: `{os.path.relpath(os.path.abspath(args['base']), ROOT)}`. Both sides: {args['epochs']} epochs on
{args['subset'] or 'all 60000'} training images, Adam lr {args['lr']} cosine, no weight decay, batch 128,
crop and flip, seed 0; first and last layers float; top-1 on {args['test_subset'] or 'the full 10k'} test images.
Ours: per-layer HWGQ scales and BN statistics from {ours['calib']} training images, {'the alternating update before fine-tuning, ' if ours['alt_init'] else ''}{f"distilled from the float base (KD, T {ours['kd_temperature']}, teacher share {ours['kd_alpha']}), " if ours['teacher'] else ''}fine-tuned, frozen and packed (top-1 of the reloaded packed file: the shipped recipe's product); the last rows add the alternating update after the fine-tune, plain and guarded (a layer's update kept only if the outputs on the next {ours['calib']} training images, held out from the fit, move closer to the float model's).
"counted bytes": both sides counted alike (1 bit per binary weight; float32 first and last layers, per-channel
scale and bias with BN folded, one scale per activation quantizer); Brevitas has no packed format, ours also
writes a packed file (the same plus its JSON header and HWGQ thresholds). Compression: float file / counted bytes.
Whole run: {minutes:.1f} min.

{markdown_table(["model", "top-1", "counted bytes", "packed file", "compression", "s / epoch"], rows)}
"""
    missing = [side for side in ("ours", "brevitas") if not any(_side(row) == side for row in results["rows"])]
    if missing:
        body += f"\nNot run with these settings (`--sides`): {', '.join(missing)}.\n"
    write_section(section, body)


if __name__ == "__main__":
    main()
