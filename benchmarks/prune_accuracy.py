"""Top-1, MACs, parameters, file bytes and latency of pruned models, beside Torch-Pruning,
with one fine-tune budget for every row; plus (``--spearman``) the criterion-quality table.

    python benchmarks/prune_accuracy.py [--base FILE] [--targets 0.5,0.33] [--ft-epochs 2]
        [--ft-subset 0] [--rows ours:l1:layer,ours:taylor:global,...] [--spearman | --spearman-only]

A row is ``tool:criterion:scope[:pF][:keepbn]``.  ``ours`` is torchslim.prune, BatchNorm
recalibrated on the calibration batches unless ``keepbn``; criterion ``l1-filters`` is the
L1 of the producing filters only.  ``tp`` is Torch-Pruning (a benchmark-only dependency):
``l1:layer`` is its uniform L1, ``taylor:global`` its global Taylor; the ratio is bisected
to the MAC target, the classifier ignored.  ``pF`` adds a parameter target of F x the MAC
target (torchslim's combined target).  Every row is pruned from the same base in one shot, then
fine-tuned with the same SGD one-cycle budget; each finished row is cached in
``benchmarks/out/prune-acc-<model>.json`` (with its model file), and an interrupted fine-tune
resumes at its last epoch, so rerunning the command continues.  At the end every finished
model is timed interleaved with the base (batch 1) and the ``prune_accuracy_<model>``
section of BENCHMARKS.md is written.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import time

import torch
import torch.nn.functional as F

from common import ROOT, OtherLoad, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import BatchLoader, load_dataset
from torchslim.profile import ort
from torchslim.distill import kd_loss_fn
from torchslim.errors import UserError
from torchslim.io import atomic_write_text
from torchslim.profile import compare_latency, count_macs, count_params
from torchslim.prune import PruneConfig, prune
from torchslim.prune.deploy import fold_batchnorm
from torchslim.prune.schedule import clear_rounds, iterative_prune
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
SHARED_BASE = os.path.join(OUT, "shared", "base-vgg14-w0.25-e10-fashion-mnist-32.safetensors")
BASE_BUDGET = {"vgg14": (0.25, 4, 0.05, 20000), "resnet56": (0.25, 4, 0.1, 20000)}  # width, epochs, lr, images
ROWS = "ours:l1:layer,ours:taylor:global,ours:taylor:global:p0.72,tp:l1:layer,tp:taylor:global"


def base_model(name: str, path: str | None, test):
    """The base to prune: ``path``, else the shared base (vgg14), else one trained here."""
    path = path or (SHARED_BASE if name == "vgg14" else None)
    if path and os.path.exists(path):
        return torchslim.load(path), f"`{os.path.relpath(path, ROOT)}`"
    width, epochs, lr, images = BASE_BUDGET[name]
    path = os.path.join(OUT, f"prune-base-{name}-w{width}-e{epochs}-n{images}.safetensors")
    note = f"trained here: width {width}, {epochs} epochs of SGD one-cycle lr {lr} on a {images}-image subset"
    if os.path.exists(path):
        return torchslim.load(path), note
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, width_mult=width)
    subset = load_dataset("fashion-mnist-32", "train", subset=images)
    fit(model, subset, TrainConfig(epochs=epochs, lr=lr, seed=0), checkpoint_path=path + ".ckpt")
    torchslim.save(model, path, top1=evaluate(model, test)["top1"])
    os.remove(path + ".ckpt")
    return model, note


def _tp_pruner(model, ratio: float, method: str, round_to: int = 1, steps: int = 1):
    """A Torch-Pruning MetaPruner over ``model`` (in place) and its importance's calibration pass."""
    import torch_pruning as tp

    classifier = [layer for layer in model.modules() if isinstance(layer, torch.nn.Linear)][-1]
    if method == "l1-uniform":
        imp, global_pruning = tp.importance.MagnitudeImportance(p=1), False
    else:
        imp, global_pruning = tp.importance.TaylorImportance(), True
    return tp.pruner.MetaPruner(model, torch.randn(1, *model.input_shape), importance=imp, pruning_ratio=ratio,
                                global_pruning=global_pruning, ignored_layers=[classifier],
                                round_to=round_to if round_to > 1 else None, iterative_steps=steps)


def _tp_step(pruner, model, method: str, calib) -> None:
    model.eval()
    if method != "l1-uniform":
        model.zero_grad()
        for x, y in calib:
            F.cross_entropy(model(x), y).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)


def tp_prune(model, target: float, method: str, calib, round_to: int = 1):
    """Torch-Pruning to ``target`` of the MACs: bisection on its per-layer (or global) ratio,
    inside the first step of a 0.05 scan that reaches the target (near its top, global Taylor
    with rounding keeps more MACs at higher ratios: 84% at 0.9 on vgg14 against 25% at 0.7, so a
    bisection over the whole range can miss).  Returns the pruned model and the ratio."""
    limit = target * count_macs(model, model.input_shape)

    def within(ratio):
        """The model pruned at ``ratio`` if it meets the MAC target, else None."""
        m = copy.deepcopy(model).eval()
        _tp_step(_tp_pruner(m, ratio, method, round_to), m, method, calib)
        return m if count_macs(m, model.input_shape) <= limit else None

    best = next(((m, step * 0.05) for step in range(1, 20) if (m := within(step * 0.05)) is not None), None)
    if best is None:
        raise SystemExit(f"Torch-Pruning ({method}, round_to {round_to}) keeps more than {target:g} of the MACs "
                         "at every ratio up to 0.95")
    low, high = best[1] - 0.05, best[1]
    for _ in range(8):
        mid = (low + high) / 2
        candidate = within(mid)
        if candidate is not None:
            high, best = mid, (candidate, mid)
        else:
            low = mid
    return best


def tp_prune_in_steps(model, row: dict, target: float, args, ft_set, calib):
    """Torch-Pruning's own iterative schedule: the one-shot ratio for the MAC target (bisected on the
    base), reached in ``steps`` equal channel steps, each scored afresh and followed by its share of
    the fine-tune epochs.  The scores move between steps, so the MACs kept can differ a little from
    the one-shot target: the table reports what was kept."""
    method = "taylor-global"
    _, ratio = tp_prune(model, target, method, calib, row.get("round_to", 1))
    pruned = copy.deepcopy(model).eval()
    pruner = _tp_pruner(pruned, ratio, method, row.get("round_to", 1), steps=row["steps"])
    for index in range(row["steps"]):
        _tp_step(pruner, pruned, method, calib)
        fit(pruned, ft_set, TrainConfig(epochs=args.ft_epochs // row["steps"], lr=row.get("lr") or args.lr,
                                        seed=index + 1), progress=False)
    return pruned


ROW_OPTIONS = ("pF (params <= F x MACs), keepbn, kd or kdT-A (distil from the base, T, alpha), lrX, stepsK, "
               "rN (channels kept rounded to multiples of N), sN (fine-tune seed N, default 0), "
               "latF (instead of the MAC target: ONNX Runtime latency <= F x the base's, measured)")


def _row_option(row: dict, option: str) -> bool:
    """Fold one ``:option`` of a row spec into ``row``; False if it is not one."""
    if option == "keepbn":
        row["recalibrate_bn"] = False
    elif option == "kd" or option.startswith("kd") and option[2:].count("-") == 1:
        temperature, alpha = option[2:].split("-") if option != "kd" else (4.0, 0.9)
        row["kd"] = [float(temperature), float(alpha)]
    elif option.startswith("lat"):
        row["latency"] = float(option[3:])
    elif option.startswith("steps") and option[5:].isdigit() and int(option[5:]) >= 1:
        row["steps"] = int(option[5:])
    elif option[:1] in "rs" and option[1:].isdigit():
        row["round_to" if option[0] == "r" else "seed"] = max(int(option[1:]), 1 if option[0] == "r" else 0)
    elif option[:2] == "lr" or option[:1] == "p":
        row["lr" if option[:2] == "lr" else "params"] = float(option[2 if option[:2] == "lr" else 1:])
    else:
        return False
    return True


def parse_row(spec: str) -> dict:
    parts = spec.split(":")
    row = {"tool": parts[0], "criterion": parts[1] if len(parts) > 1 else "", "scope": parts[2] if len(parts) > 2 else "",
           "params": None, "recalibrate_bn": True}
    try:
        ok = all(_row_option(row, o) for o in parts[3:])
    except ValueError:
        ok = False
    if not ok or len(parts) < 3 or parts[0] not in ("ours", "tp") or parts[2] not in ("layer", "global", "greedy"):
        raise SystemExit(f"bad row {spec!r}: want tool:criterion:scope[:option...], tool ours or tp, "
                         f"options {ROW_OPTIONS}")
    return row


def label(row: dict) -> str:
    tool = "torchslim" if row["tool"] == "ours" else "Torch-Pruning"
    scope = "uniform" if row["scope"] == "layer" else row["scope"]
    extra = f", params <= {row['params']:g} x MACs" if row["params"] else ""
    extra += f", ORT latency <= {row['latency']:g} x the base's" if row.get("latency") else ""
    extra += ", BN not recalibrated" if row["tool"] == "ours" and not row.get("recalibrate_bn", True) else ""
    extra += f", {row['steps']} prune steps" if row.get("steps", 1) > 1 else ""
    extra += f", channels rounded to {row['round_to']}" if row.get("round_to", 1) > 1 else ""
    extra += f", fine-tune seed {row['seed']}" if row.get("seed") else ""
    extra += f", fine-tune lr {row['lr']:g}" if row.get("lr") else ""
    extra += ", distilled from the base (T {:g}, alpha {:g})".format(*row["kd"]) if row.get("kd") else ""
    return f"{tool} | {row['criterion']} ({scope}{extra})"


def prune_row(model, row: dict, target: float, train, calib):
    if row["tool"] == "tp":
        method = {("l1", "layer"): "l1-uniform", ("taylor", "global"): "taylor-global"}.get(
            (row["criterion"], row["scope"]))
        if method is None or row["params"] or row.get("latency"):
            raise SystemExit(f"Torch-Pruning rows here: tp:l1:layer and tp:taylor:global, not {row}")
        return tp_prune(model, target, method, calib, row.get("round_to", 1))[0]
    result = prune(model, ours_config(row, target, calib), calib)
    if result.latency:
        print(f"{label(row)}: latency selection {json.dumps(result.latency)}", flush=True)
    return result.model


def ours_config(row: dict, target: float, calib) -> PruneConfig:
    params = None if row["params"] is None else min(1.0, row["params"] * target)
    criterion = row["criterion"].removesuffix("-filters")  # l1-filters: Li et al.'s producer-only L1
    if row.get("latency"):  # a measured latency target replaces the MAC target
        target, params = None, None
    return PruneConfig(criterion=criterion, target_macs=target, target_params=params,
                       target_latency=row.get("latency"), latency_runtime="ort",
                       scope=row["scope"], calibration_batches=len(calib), batch_size=len(calib[0][1]),
                       group_importance=not row["criterion"].endswith("-filters"), round_to=row.get("round_to", 1),
                       recalibrate_bn=row["recalibrate_bn"])


def prune_in_steps(model, row: dict, target: float, args, ft_set, calib, folder: str):
    """torchslim's geometric rounds: ``steps`` prunes, each followed by its share of the fine-tune epochs."""
    steps = row["steps"]
    if args.ft_epochs % steps or row["tool"] == "tp" and (row["criterion"], row["scope"]) != ("taylor", "global"):
        raise SystemExit(f"stepsK rows: K must divide --ft-epochs ({args.ft_epochs}), and Torch-Pruning's "
                         f"only as tp:taylor:global; got {row}")
    if row["tool"] == "tp":
        return tp_prune_in_steps(model, row, target, args, ft_set, calib)

    def finetune(pruned, index, checkpoint):
        loss_fn = kd_loss_fn(copy.deepcopy(model), *row["kd"]) if row.get("kd") else None
        fit(pruned, ft_set, TrainConfig(epochs=args.ft_epochs // steps, lr=row.get("lr") or args.lr, seed=index),
            checkpoint_path=checkpoint, loss_fn=loss_fn, progress=False)
        pruned.cpu()

    pruned, _ = iterative_prune(model, ours_config(row, target, calib), folder, finetune=finetune,
                                calibration=calib, rounds=steps, log=None)
    clear_rounds(folder)
    return pruned


def run_row(key: str, folder: str, model, row, target, args, train, test, calib) -> dict:
    """Prune, evaluate, fine-tune (resumable per epoch), evaluate; the model is kept in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, key.replace(":", "_").replace("@", "-"))
    began = time.perf_counter()
    ft_set = train if not args.ft_subset else load_dataset("fashion-mnist-32", "train", subset=args.ft_subset)
    if row.get("steps", 1) > 1:
        pruned = prune_in_steps(model, row, target, args, ft_set, calib, stem + ".rounds").eval()
        return row_record(model, row, target, pruned, None, evaluate(pruned, test)["top1"], stem, began)
    if os.path.exists(stem + ".pruned.safetensors"):
        pruned = torchslim.load(stem + ".pruned.safetensors")
    else:
        pruned = prune_row(model, row, target, train, calib).eval()
        torchslim.save(pruned, stem + ".pruned.safetensors")
    top1_pruned = top1 = evaluate(pruned, test)["top1"]
    if args.ft_epochs:
        loss_fn = kd_loss_fn(copy.deepcopy(model), *row["kd"]) if row.get("kd") else None
        fit(pruned, ft_set, TrainConfig(epochs=args.ft_epochs, lr=row.get("lr") or args.lr, seed=row.get("seed", 0)),
            checkpoint_path=stem + ".ckpt", loss_fn=loss_fn, progress=False)
        top1 = evaluate(pruned.eval(), test)["top1"]
    return row_record(model, row, target, pruned.eval(), top1_pruned, top1, stem, began)


def row_record(model, row, target, pruned, top1_pruned, top1, stem, began) -> dict:
    """Save the finished model, drop the row's leftovers, and describe the row for the cache."""
    torchslim.save(pruned, stem + ".safetensors")
    for leftover in (stem + ".ckpt", stem + ".pruned.safetensors"):
        if os.path.exists(leftover):
            os.remove(leftover)
    shape = tuple(model.input_shape)
    return {"row": row, "target": target, "label": label(row), "top1_pruned": top1_pruned,
            "top1": top1, "macs": count_macs(pruned, shape), "params": count_params(pruned),
            "bytes": os.path.getsize(stem + ".safetensors"), "file": os.path.relpath(stem + ".safetensors", ROOT),
            "seconds": time.perf_counter() - began,
            **({"tp_version": importlib.metadata.version("torch-pruning")} if row["tool"] == "tp" else {})}


def tp_versions(rows) -> str:
    """The Torch-Pruning version(s) the cached rows were made with (not the one installed now)."""
    versions = sorted({r.get("tp_version", "(version not recorded)") for r in rows if r["row"]["tool"] == "tp"})
    return " / ".join(versions) or importlib.metadata.version("torch-pruning")


def round_to_models(base, targets) -> dict:
    """Latency-only check of the deployment options: the base pruned (L1 global, params <= 0.72 x MACs,
    no fine-tune: weights do not change the time) with round-to 1 and 8, for each MAC target.  A target
    the rounding cannot reach (narrow layers) maps to the reason, and gets a row saying so."""
    models = {}
    for target in targets:
        for multiple in (1, 8):
            config = PruneConfig(criterion="l1", target_macs=target, target_params=min(1.0, 0.72 * target),
                                 round_to=multiple)
            try:
                models[f"round-to {multiple} @ {target}"] = prune(base, config=config).model.eval()
            except UserError as error:
                models[f"round-to {multiple} @ {target}"] = str(error)
    return models


def round_to_table(rounded: dict, latency: dict, base_macs: int, shape) -> str:
    rows = []
    for name, model in rounded.items():
        multiple, target = name.removeprefix("round-to ").split(" @ ")
        if isinstance(model, str):
            rows.append([f"{float(target):.0%}", multiple, f"not reachable: {model}", "-", "-", "-"])
            continue
        rows.append([f"{float(target):.0%}", multiple, f"{count_macs(model, shape) / base_macs:.3f}"]
                    + [f"{latency['base' + s]['median_ms'] / latency[name + s]['median_ms']:.2f}x"
                       for s in ("", " folded", " ort")])
    return markdown_table(["MACs target", "round-to", "MACs kept", "speed-up", "speed-up, BN folded",
                           "speed-up, ORT"], rows)


def model_title(name: str, base) -> str:
    """``name``, plus its width when the base is a narrowed zoo model (first conv against the full one's)."""
    def first_conv(model):
        return next(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    width = first_conv(base) / first_conv(models.create(name, num_classes=10))
    return name if width == 1 else f"{name} width {width:g}"


def render(args, cache_path: str, cache: dict, base, base_note: str, base_top1: float, base_bytes: int,
           seconds: float) -> None:
    shape = tuple(base.input_shape)
    base_macs, base_params = count_macs(base, shape), count_params(base)
    done = [r for r in cache["rows"].values()]
    loaded = {f"{r['label']} @ {r['target']}": torchslim.load(os.path.join(ROOT, r["file"])).eval() for r in done}
    rounded = round_to_models(base, sorted({r["target"] for r in done}, reverse=True))
    runtimes = {"": {}, " folded": {}, " ort": {}}  # eager, BN folded, ONNX Runtime float32
    reached = {name: model for name, model in rounded.items() if not isinstance(model, str)}
    for name, model in {"base": base, **loaded, **reached}.items():
        runtimes[""][name], runtimes[" folded"][name + " folded"] = model, fold_batchnorm(model)
        runtimes[" ort"][name + " ort"] = ort.OrtModule(ort.export_onnx_bytes(model, shape), threads=1)
    latency = {}
    with OtherLoad() as load:  # one runtime at a time: a call after another runtime's starts with its caches
        for timed in runtimes.values():
            latency.update(compare_latency(timed, shape, batch_size=1, threads=1, repeats=args.repeats,
                                           block=args.block))
    base_ms, folded_ms, ort_ms = (latency[f"base{s}"]["median_ms"] for s in ("", " folded", " ort"))
    rows = []
    for r in sorted(done, key=lambda r: (-r["target"], r["row"]["tool"] != "ours", r["label"])):
        tool, what = r["label"].split(" | ")
        ms = latency[f"{r['label']} @ {r['target']}"]["median_ms"]
        ms_folded = latency[f"{r['label']} @ {r['target']} folded"]["median_ms"]
        ms_ort = latency[f"{r['label']} @ {r['target']} ort"]["median_ms"]
        target = "-" if r["row"].get("latency") else f"{r['target']:.0%}"  # latency rows have no MAC target
        rows.append([target, tool, what, f"{r['macs'] / base_macs:.3f}", f"{r['params'] / base_params:.3f}",
                     f"{r['bytes']:,}", f"{base_bytes / r['bytes']:.2f}x", f"{base_ms / ms:.2f}x",
                     f"{folded_ms / ms_folded:.2f}x", f"{ort_ms / ms_ort:.2f}x",
                     "-" if r["top1_pruned"] is None else f"{r['top1_pruned']:.4f}", f"{r['top1']:.4f}",
                     f"{(r['top1'] - base_top1) * 100:+.2f}"])
    budget = (f"{args.ft_epochs} epoch(s) of SGD one-cycle lr {args.lr}, batch 128, crop and flip, on "
              + (f"a {args.ft_subset}-image class-balanced subset" if args.ft_subset else "the full 60k training set"))
    budget = budget if args.ft_epochs else "no fine-tune"
    missing = [f"{spec}@{t}" for t in args.targets.split(",") for spec in args.rows.split(",")
               if f"{spec}@{float(t):g}" not in cache["rows"]]
    body = "\n".join([
        f"## Pruning: accuracy, size and speed against MACs kept, {model_title(args.model, base)} on fashion-mnist-32, "
        f"{args.ft_epochs} fine-tune epoch(s) on {args.ft_subset or 60000:,} images",
        "",
        f"Command: `{command_line()}` (OMP_NUM_THREADS=1; rows cached in "
        f"`{os.path.relpath(cache_path, ROOT)}`, so the run may span several invocations)  ",
        f"Hardware: {hardware()}; while timing, {load.describe()}"
        "; latencies are ratios from one interleaved run per runtime (base, row 1, row 2, ..., base, ..., "
        f"each model {args.block} timed call(s) in a row per turn after an untimed one, as when serving request "
        f"after request), batch 1, 1 thread, median of {args.repeats}; base {base_ms:.3f} ms in eager torch, "
        f"{folded_ms:.3f} ms with BatchNorm folded into the convs (\"BN folded\" compares folded with folded), {ort_ms:.3f} ms in ONNX Runtime "
        f"{__import__('onnxruntime').__version__} float32 (\"ORT\": each model exported to ONNX, opset 17, "
        "all graph optimisations, 1 intra-op thread; it folds BatchNorm itself).  ",
        f"Base: {args.model}, {base_note}; top-1 {base_top1:.4f}, {base_macs:,} MACs, {base_params:,} params, "
        f"{base_bytes:,} bytes as saved by `torchslim.save`.  ",
        f"Budget, the same for every row: prune to the MAC target in one shot from the base (calibration: "
        f"{args.calib} batches of 64 training images, for Taylor scores and torchslim's BatchNorm recalibration), "
        f"then {budget}; top-1 on the 10k test images. Torch-Pruning "
        f"{tp_versions(done)}: ratio bisected to the same MAC target, classifier ignored. "
        "\"top-1 pruned\" is before fine-tuning; \"file smaller\" compares `torchslim.save` files. "
        f"Wall time of this invocation {seconds / 60:.1f} min; per row when it ran (prune + fine-tune + eval): "
        + ", ".join(f"{r['seconds'] / 60:.0f}" for r in done) + " min."
        + (f" Not run yet: {', '.join(missing)}." if missing else ""),
        "",
        markdown_table(["MACs target", "tool", "criterion (selection)", "MACs kept", "params kept", "file bytes",
                        "file smaller", "speed-up", "speed-up, BN folded", "speed-up, ORT", "top-1 pruned", "top-1",
                        "drop (points)"], rows),
        "",
        "Deployment options, latency only (the base pruned with torchslim L1 global, params <= 0.72 x MACs, "
        "not fine-tuned; timed in the same runs): channel counts rounded to multiples of 8 or not; "
        "each speed-up is against the base in the same runtime.",
        "",
        round_to_table(rounded, latency, base_macs, shape),
    ])
    if args.print_only:
        print(body)
    else:
        write_section(args.section or f"prune_accuracy_{args.model}", body)


def spearman_table(args, model, calib, base_note: str) -> None:
    """Spearman of every criterion against the oracle (no fine-tune)."""
    from torchslim.prune import Context, build_graph, list_criteria
    from torchslim.prune.criteria import score_groups
    from torchslim.prune.quality import _normalised, spearman

    work = copy.deepcopy(model)
    graph = build_graph(work)
    ctx = Context(work, graph, calib, seed=0)
    scores, seconds = {}, {}
    for name in ["oracle"] + [c for c in list_criteria() if c != "oracle"]:
        start = time.perf_counter()
        scores[name] = score_groups(name, graph.groups, ctx)
        seconds[name] = time.perf_counter() - start
    big = [i for i, g in enumerate(graph.groups) if len(g) > 2]
    rows = []
    for name in list_criteria():
        per_group = [v for v in (spearman(scores[name][i], scores["oracle"][i]) for i in big) if v == v]
        overall = spearman(_normalised([scores[name][i] for i in big]), _normalised([scores["oracle"][i] for i in big]))
        rows.append([name, f"{sum(per_group) / max(len(per_group), 1):.3f}", f"{overall:.3f}", f"{seconds[name]:.1f}"])
    write_section(f"prune_spearman_{args.model}", "\n".join([
        f"## Pruning: criterion quality against the oracle, {args.model}",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Base: {args.model}, {base_note}.  ",
        f"Spearman rank correlation with the oracle (exact loss change when a channel is zeroed) on "
        f"{sum(len(y) for _, y in calib)} training images, the evaluation of Molchanov et al. 2016: the mean over the "
        f"{len(big)} channel groups of more than 2 channels, and over all channels after per-group "
        "L2 normalisation.",
        "",
        markdown_table(["criterion", "per-layer Spearman", "global Spearman", "scoring s"], rows),
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg14", choices=sorted(BASE_BUDGET))
    parser.add_argument("--base", default=None, help="model file to prune (default: the shared vgg14 base)")
    parser.add_argument("--targets", default="0.5,0.33")
    parser.add_argument("--rows", default=ROWS)
    parser.add_argument("--ft-subset", type=int, default=0, help="0: the full training set")
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--calib", type=int, default=8, help="calibration batches of 64")
    parser.add_argument("--repeats", type=int, default=200, help="interleaved latency repeats")
    parser.add_argument("--block", type=int, default=10,
                        help="timed calls in a row per model and turn (1: strict alternation, every call "
                             "starting with the caches the other models left)")
    parser.add_argument("--cache", default=None, help="JSON of finished rows, ending .json (default "
                        "benchmarks/out/prune-acc-<model>.json); the models go in the folder of the same name")
    parser.add_argument("--spearman", action="store_true", help="also write the criterion-quality table")
    parser.add_argument("--spearman-only", action="store_true",
                        help="write only the criterion-quality table: no rows, no latency")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default prune_accuracy_<model>)")
    parser.add_argument("--render-only", action="store_true",
                        help="write the table of the rows already cached, running none")
    parser.add_argument("--no-render", action="store_true",
                        help="run the missing rows into the cache and stop: no latency timing, no table")
    parser.add_argument("--print-only", action="store_true", help="print the table instead of writing BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    train = load_dataset("fashion-mnist-32", "train")
    test = load_dataset("fashion-mnist-32", "test")
    model, base_note = base_model(args.model, args.base, test)
    model.eval()
    base_top1 = evaluate(model, test)["top1"]
    calib = list(BatchLoader(train, batch_size=64, shuffle=True, seed=0))[:args.calib]
    if args.spearman_only:
        spearman_table(args, model, calib[:2], base_note)
        return
    budget = {"base": base_note, "ft_epochs": args.ft_epochs, "ft_subset": args.ft_subset, "lr": args.lr,
              "calib": args.calib}
    cache_path = args.cache or os.path.join(OUT, f"prune-acc-{args.model}.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {"budget": budget, "rows": {}}
    if cache["budget"] != budget:
        raise SystemExit(f"{cache_path} holds rows of another budget ({cache['budget']}); move it away to start over")
    for target in [] if args.render_only else [float(t) for t in args.targets.split(",")]:
        for spec in args.rows.split(","):
            key = f"{spec}@{target:g}"
            if key in cache["rows"]:
                continue
            record = run_row(key, cache_path[:-len(".json")], model, parse_row(spec), target, args, train, test, calib)
            if os.path.exists(cache_path):  # another invocation may have added rows meanwhile
                cache = json.load(open(cache_path))
            cache["rows"][key] = record
            atomic_write_text(cache_path, json.dumps(cache, indent=1))
            r = cache["rows"][key]
            print(f"{key}: top-1 {r['top1_pruned']} -> {r['top1']:.4f}, MACs {r['macs']:,}, "
                  f"{r['bytes']:,} bytes, {r['seconds'] / 60:.1f} min", flush=True)
    if args.no_render:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base_bytes = os.path.getsize(torchslim.save(model, os.path.join(tmp, "base.safetensors")))
    render(args, cache_path, cache, model, base_note, base_top1, base_bytes, time.perf_counter() - began)
    if args.spearman:
        spearman_table(args, model, calib[:2], base_note)


if __name__ == "__main__":
    main()
