"""Pruning coverage over every torchvision classification builder and timm families,
torchslim beside Torch-Pruning 1.6.1 on the same models in the same run.

Per model (random init, no weights downloaded) and per setting -- l2 global to 0.5 of the
MACs, taylor global to 0.33 -- each tool's pruned model is checked for: the output shape
kept, the MAC target met (counted by one counter for both tools), the caller's model
untouched, and ONNX export with ONNX Runtime agreeing with torch (rtol 1e-3, atol 1e-4).
A case passes when all hold; a one-line refusal (``UserError``) is counted apart from a
crash.  Each model runs in its own process, one at a time.

    python benchmarks/prune_coverage.py                      # everything, both tools
    python benchmarks/prune_coverage.py --models torchvision:resnet18 timm:convnext_atto
    python benchmarks/prune_coverage.py --one torchvision:vit_b_16   # one model, JSON out

Results are kept in ``--results`` (resumable); the table goes into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section

from tests.prune.thirdparty import (build_torchvision, import_torchvision, smallest_per_family,  # noqa: E402
                                    torchvision_builders)

SETTINGS = (("l2", 0.5), ("taylor", 0.33))
TIMM = ("resnet18", "resnet50", "efficientnet_b0", "efficientnet_lite0", "mobilenetv3_large_100",
        "mobilenetv3_small_100", "convnext_atto", "convnext_tiny", "regnetx_002", "regnety_002",
        "ghostnet_050", "ghostnet_100", "vit_tiny_patch16_224", "vit_small_patch16_224",
        "deit_tiny_patch16_224", "deit_small_patch16_224")
TIMM_VIT_SIZE = 64
# --smallest: the smallest builder of every torchvision family, these, and one timm model per family
EXTRA = ("efficientnet_v2_s", "swin_v2_t")
TIMM_SMALL = ("resnet18", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnety_002",
              "ghostnet_050", "vit_tiny_patch16_224", "deit_tiny_patch16_224")


def _build(source: str):
    kind, name = source.split(":", 1)
    if kind == "torchvision":
        return build_torchvision(name)
    import_torchvision()  # timm imports torchvision when it is installed
    import timm  # optional dependency (benchmark only)

    kwargs = {"img_size": TIMM_VIT_SIZE} if name.startswith(("vit_", "deit_")) else {}
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return model.eval(), (3, TIMM_VIT_SIZE if kwargs else 64, TIMM_VIT_SIZE if kwargs else 64)


def _calibration(shape):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, *shape, generator=generator), torch.randint(0, 10, (4,), generator=generator))]


def _ours(model, example, criterion, target, batches):
    from torchslim.prune import PruneConfig, prune

    config = PruneConfig(criterion=criterion, target_macs=target, scope="global")
    return prune(model, config, batches, example_inputs=example).model


def _torch_pruning(model, example, criterion, target, batches):
    """Torch-Pruning as its README drives it: global, the classifier ignored, stepped until
    the MAC target is met (twelve steps of 7.5% of the channels at most)."""
    import torch_pruning as tp  # benchmark-only dependency

    from torchslim.profile import count_macs

    work = copy.deepcopy(model)
    base = count_macs(work, tuple(example.shape[1:]))
    heads = [m for m in work.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 10]
    importance = tp.importance.GroupMagnitudeImportance(p=2) if criterion == "l2" \
        else tp.importance.GroupTaylorImportance()
    pruner = tp.pruner.MetaPruner(work, example, importance=importance, global_pruning=True,
                                  pruning_ratio=0.9, iterative_steps=12, ignored_layers=heads)
    for _ in range(12):
        if criterion == "taylor":
            work.zero_grad()
            for x, y in batches:
                torch.nn.functional.cross_entropy(work(x), y).backward()
        pruner.step()
        if count_macs(work, tuple(example.shape[1:])) <= target * base:
            break
    return work.eval()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _onnx_agrees(model, shape) -> None:
    from torchslim.export.onnx import export_onnx

    # nn.MultiheadAttention's eval fast path (aten::_native_multi_head_attention) has no ONNX
    # export, pruned or not: export the composite path
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with tempfile.TemporaryDirectory() as folder:
            export_onnx(model, os.path.join(folder, "m.onnx"), shape)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def _case(tool, model, shape, criterion, target) -> dict:
    from torchslim.errors import UserError
    from torchslim.profile import count_macs

    example = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))
    before, expected = _state(model), model(example).shape
    base = count_macs(model, shape)
    start = time.perf_counter()
    try:
        pruned = tool(model, example, criterion, target, _calibration(shape))
    except UserError as error:
        return {"status": "refused", "detail": str(error).splitlines()[0][:200]}
    except Exception as error:  # a crash is a result here
        return {"status": "crash", "detail": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    seconds = time.perf_counter() - start
    after = _state(model)
    untouched = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        try:
            shape_ok = pruned(example).shape == expected
        except Exception as error:
            return {"status": "broken", "detail": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    share = count_macs(pruned, shape) / base
    result = {"share": round(share, 4), "seconds": round(seconds, 1), "untouched": untouched, "shape_ok": shape_ok}
    if not (untouched and shape_ok):
        return {**result, "status": "broken", "detail": "caller's model changed" if not untouched else "output shape"}
    if share > target * 1.001:
        return {**result, "status": "missed", "detail": f"kept {share:.3f} of the MACs"}
    try:
        _onnx_agrees(pruned, shape)
    except Exception as error:
        return {**result, "status": "onnx", "detail": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    return {**result, "status": "pass"}


def run_one(source: str, tools) -> dict:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, shape = _build(source)
    out = {"source": source, "input": "x".join(map(str, shape))}
    for tool_name in tools:
        tool = _ours if tool_name == "torchslim" else _torch_pruning
        for criterion, target in SETTINGS:
            out[f"{tool_name}/{criterion}"] = _case(tool, model, shape, criterion, target)
    return out


def _sources(args) -> list[str]:
    if args.models:
        return args.models
    if args.smallest:
        return [f"torchvision:{n}" for n in smallest_per_family(torchvision_builders())] + \
            [f"torchvision:{n}" for n in EXTRA] + [f"timm:{n}" for n in TIMM_SMALL]
    return [f"torchvision:{n}" for n in torchvision_builders()] + [f"timm:{n}" for n in TIMM]


def _cell(case: dict) -> str:
    status = case.get("status", "?")
    if status == "pass":
        return f"pass {case['share']:.2f}"
    return f"{status}: {case.get('detail', '')}".replace("|", "/")[:90]


def _report(results: dict, tools, seconds: float, ran: str | None = None) -> str:
    keys = [f"{t}/{c}" for t in tools for c, _ in SETTINGS]
    rows, lines = [], []
    for source, result in results.items():
        rows.append([source, result.get("input", "")] + [_cell(result[k]) if k in result else
                                                          _cell(result) if "status" in result else ""
                                                          for k in keys])
    for tool in tools:
        for family in ("torchvision", "timm"):
            chosen = {s: r for s, r in results.items() if s.startswith(family)
                      and (f"{tool}/l2" in r or r.get("status") not in (None, "timeout"))}
            statuses = [[r.get(f"{tool}/{c}", r).get("status") for c, _ in SETTINGS] for r in chosen.values()]
            passed = sum(all(s == "pass" for s in row) for row in statuses)
            refused = sum("refused" in row and all(s in ("pass", "refused") for s in row) for row in statuses)
            if chosen:
                lines.append(f"- **{tool}**, {family}: {passed}/{len(chosen)} models pass both settings "
                             f"({100 * passed / len(chosen):.1f}%); {refused} more refused with one line.")
    unfinished = [s for s, r in results.items() if r.get("status") == "timeout"]
    if unfinished:
        lines.append(f"- Not finished within the per-model time limit (counted for neither tool): "
                     f"{', '.join(unfinished)}.")
    return "\n".join([
        "## Pruning coverage: torchvision and timm classifiers",
        "",
        f"Command: `{ran or command_line()}`  ",
        f"Hardware: {hardware()}" + (f"; {seconds / 60:.0f} min in all." if not ran else "."),
        "",
        "Random init, 10 classes; input 3x64x64 (alexnet 224: ONNX needs its 6x6 features; inception_v3 96; "
        "maxvit_t 224; ViT/DeiT 64 via their "
        "image-size argument, vit_h_14 56). Settings: l2 global to 0.5 of the MACs, taylor global to 0.33 "
        "(one calibration batch of 4). Pass = output shape kept, MAC target met (same counter for both tools), "
        "caller's model untouched, ONNX export agreeing with ONNX Runtime. Torch-Pruning 1.6.1 is driven as its "
        "README shows (MetaPruner, global, the 10-class head ignored, stepped until the target is met), "
        "with no per-model configuration (no attention-head hints).",
        "",
        *lines,
        "",
        markdown_table(["model", "input"] + [k.replace("/", " ") for k in keys], rows),
        "",
        "An empty cell: that tool was not run on that model in this run.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="sources (torchvision:NAME, timm:NAME); default all")
    parser.add_argument("--one", help="run one source in this process and print its JSON")
    parser.add_argument("--smallest", action="store_true",
                        help="the smallest torchvision builder of each family and one timm model per family")
    parser.add_argument("--report-only", action="store_true", help="write the table from --results, run nothing")
    parser.add_argument("--ran", help="with --report-only: the commands that gathered the results")
    parser.add_argument("--tools", nargs="*", default=["torchslim", "torch-pruning"])
    parser.add_argument("--results", default=os.path.join(tempfile.gettempdir(), "prune_coverage.json"))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.tools)))
        return
    results = json.load(open(args.results)) if os.path.exists(args.results) else {}
    start = time.perf_counter()
    for source in _sources(args):
        if source in results or args.report_only:
            continue
        command = [sys.executable, os.path.abspath(__file__), "--one", source, "--tools", *args.tools]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else \
                {"status": "crash", "detail": (done.stderr.strip().splitlines() or ["no output"])[-1][:160]}
        except subprocess.TimeoutExpired:
            result = {"status": "timeout", "detail": f"over {args.timeout} s"}
        results[source] = result
        print(source, json.dumps(result), flush=True)
        with open(args.results, "w") as handle:
            json.dump(results, handle, indent=1)
    body = _report({s: results[s] for s in _sources(args) if s in results}, args.tools, time.perf_counter() - start,
                   args.ran if args.report_only else None)
    print(body)
    if not args.no_write:
        write_section("prune_coverage", body)


if __name__ == "__main__":
    main()
