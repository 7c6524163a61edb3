"""Accuracy against MACs kept for every pruning criterion, beside Torch-Pruning, plus the
Spearman table of every criterion against the oracle.

    python benchmarks/prune_accuracy.py --model vgg14 [--targets 0.5,0.33] [--ft-subset 10000]
        [--ft-epochs 1] [--threads 1]

The base model is the baselines.py model when it exists (benchmarks/out/), else one
trained here with a stated budget.  Every criterion is scored once on the same
calibration batches, then for each MAC target the channels are selected (global scope,
mean-normalised scores; plus the per-layer uniform L1 of Li et al.), removed, and the
model fine-tuned with the same budget.  Torch-Pruning (benchmark-only dependency) runs
L1 uniform and Taylor global to the same MAC targets with the same fine-tune.  Writes the
``prune_accuracy_<model>`` and ``prune_spearman_<model>`` sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch
import torch.nn.functional as F

from common import ROOT, command_line, hardware, markdown_table, write_section

import torchslim
from torchslim import models
from torchslim.data import BatchLoader, load_dataset
from torchslim.profile import count_macs, count_params, serialized_size
from torchslim.prune import Context, PruneConfig, build_graph, list_criteria
from torchslim.prune.criteria import score_groups
from torchslim.prune.quality import _normalised, spearman
from torchslim.prune.select import CostModel, select_channels
from torchslim.prune.surgery import apply_removal
from torchslim.train import TrainConfig, evaluate, fit

OUT = os.path.join(ROOT, "benchmarks", "out")
BASE_BUDGET = {"vgg14": (0.25, 4, 0.05, 20000), "resnet56": (0.25, 4, 0.1, 20000)}  # width, epochs, lr, images


def base_model(name: str, train, test, epochs=None, images=None):
    import baselines

    path = baselines.model_path(name)
    if os.path.exists(path):
        return torchslim.load(path), f"`{os.path.relpath(path, ROOT)}` from baselines.py"
    width, default_epochs, lr, default_images = BASE_BUDGET[name]
    epochs, images = epochs or default_epochs, images or default_images
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


def finetune(model, train, epochs: int, lr: float):
    if epochs:
        fit(model, train, TrainConfig(epochs=epochs, lr=lr, seed=0), progress=False)
    return model.eval()


def tp_prune(model, target: float, method: str, calib):
    """Torch-Pruning to ``target`` of the MACs: bisection on its per-layer (or global) ratio."""
    import torch_pruning as tp

    example = torch.randn(1, *model.input_shape)
    base_macs = count_macs(model, model.input_shape)
    def build(ratio):
        m = copy.deepcopy(model).eval()
        classifier = [layer for layer in m.modules() if isinstance(layer, torch.nn.Linear)][-1]
        if method == "l1-uniform":
            imp, global_pruning = tp.importance.MagnitudeImportance(p=1), False
        else:
            imp, global_pruning = tp.importance.TaylorImportance(), True
        pruner = tp.pruner.MetaPruner(m, example, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, ignored_layers=[classifier])
        if method != "l1-uniform":
            m.zero_grad()
            for x, y in calib:
                F.cross_entropy(m(x), y).backward()
        pruner.step()
        m.zero_grad(set_to_none=True)
        return m

    low, high, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (low + high) / 2
        candidate = build(mid)
        if count_macs(candidate, model.input_shape) <= target * base_macs:
            high, best = mid, candidate
        else:
            low = mid
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg14", choices=sorted(BASE_BUDGET))
    parser.add_argument("--targets", default="0.5,0.33")
    parser.add_argument("--ft-subset", type=int, default=10000)
    parser.add_argument("--ft-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--calib", type=int, default=2, help="calibration batches of 64 (oracle data too)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--criteria", default=",".join(list_criteria()))
    parser.add_argument("--base-epochs", type=int, default=None, help="when training the base here")
    parser.add_argument("--base-images", type=int, default=None, help="when training the base here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    train = load_dataset("fashion-mnist-32", "train")
    test = load_dataset("fashion-mnist-32", "test")
    ft_set = load_dataset("fashion-mnist-32", "train", subset=args.ft_subset)
    model, base_note = base_model(args.model, train, test, args.base_epochs, args.base_images)
    model.eval()
    shape = tuple(model.input_shape)
    base_top1 = evaluate(model, test)["top1"]
    base_macs, base_params, base_bytes = count_macs(model, shape), count_params(model), serialized_size(model)
    calib = list(BatchLoader(train, batch_size=64, shuffle=True, seed=0))[:args.calib]
    work = copy.deepcopy(model)
    graph = build_graph(work)
    ctx = Context(work, graph, calib, seed=0)
    cost = CostModel(work, graph, shape)
    criteria = args.criteria.split(",")
    scores, score_seconds = {}, {}
    for name in ["oracle"] + [c for c in criteria if c != "oracle"]:
        start = time.perf_counter()
        scores[name] = score_groups(name, graph.groups, ctx)
        score_seconds[name] = time.perf_counter() - start
        print(f"scored {name} in {score_seconds[name]:.1f} s", flush=True)
    for p in work.parameters():
        p.grad = None
    runs = [(c, "global") for c in criteria] + [("l1", "layer")]
    rows, results = [], []
    for target in [float(t) for t in args.targets.split(",")]:
        for criterion, scope in runs:
            config = PruneConfig(criterion=criterion, target_macs=target, scope=scope)
            removed, _ = select_channels(graph.groups, scores[criterion], cost, config)
            pruned = copy.deepcopy(work)
            apply_removal(pruned, graph, removed)
            results.append(("torchslim", criterion, scope, target, finetune(pruned, ft_set, args.ft_epochs, args.lr)))
            print(f"{criterion}/{scope} @ {target}: done", flush=True)
        for method in ("l1-uniform", "taylor-global"):
            pruned = tp_prune(model, target, method, calib)
            results.append(("Torch-Pruning", method, "", target, finetune(pruned, ft_set, args.ft_epochs, args.lr)))
            print(f"torch-pruning {method} @ {target}: done", flush=True)
    for tool, criterion, scope, target, pruned in results:
        top1 = evaluate(pruned, test)["top1"]
        macs = count_macs(pruned, shape)
        rows.append([tool, criterion + (f" ({scope})" if scope else ""), f"{target:.0%}", f"{macs / base_macs:.3f}",
                     f"{count_params(pruned) / base_params:.3f}", f"{base_bytes / serialized_size(pruned):.2f}x",
                     f"{top1:.4f}", f"{(top1 - base_top1) * 100:+.2f}"])
    rows.sort(key=lambda r: (r[2], r[0] != "torchslim", r[1]))
    seconds = time.perf_counter() - began
    body = "\n".join([
        f"## Pruning: accuracy against MACs kept, {args.model} on fashion-mnist-32",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Base: {args.model}, {base_note}; top-1 {base_top1:.4f}, {base_macs:,} MACs, {base_params:,} params.  ",
        f"Budget, the same for every row: prune to the MAC target in one shot, then {args.ft_epochs} fine-tune "
        f"epoch(s) of SGD one-cycle lr {args.lr} on a {args.ft_subset}-image class-balanced subset; top-1 on the 10k "
        f"test images. Calibration and oracle data: {args.calib} batches of 64 training images. "
        f"Torch-Pruning {__import__('torch_pruning').__version__}: ratio bisected to the same MAC target, "
        f"classifier ignored. Whole run {seconds / 60:.1f} min.",
        "",
        markdown_table(["tool", "criterion (scope)", "target", "MACs kept", "params kept", "file smaller",
                        "top-1", "drop (points)"], rows),
    ])
    write_section(f"prune_accuracy_{args.model}", body)
    oracle = scores["oracle"]
    big = [i for i, g in enumerate(graph.groups) if len(g) > 2]
    spearman_rows = []
    for criterion in criteria:
        per_group = [spearman(scores[criterion][i], oracle[i]) for i in big]
        per_group = [v for v in per_group if v == v]
        overall = spearman(_normalised([scores[criterion][i] for i in big]), _normalised([oracle[i] for i in big]))
        spearman_rows.append([criterion, f"{sum(per_group) / max(len(per_group), 1):.3f}", f"{overall:.3f}",
                              f"{score_seconds[criterion]:.1f}"])
    write_section(f"prune_spearman_{args.model}", "\n".join([
        f"## Pruning: criterion quality against the oracle, {args.model}",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}  ",
        f"Spearman rank correlation with the oracle (exact loss change when a channel is zeroed) on "
        f"{args.calib * 64} training images, the evaluation of Molchanov et al. 2016: the mean over the "
        f"{len(big)} channel groups of more than 2 channels, and over all channels after per-group "
        "L2 normalisation.",
        "",
        markdown_table(["criterion", "per-layer Spearman", "global Spearman", "scoring s"], spearman_rows),
    ]))
    json.dump({"rows": rows, "spearman": spearman_rows}, open(os.path.join(OUT, f"prune-{args.model}.json"), "w"))


if __name__ == "__main__":
    main()
