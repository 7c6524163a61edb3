"""Pruning coverage over every torchvision classification builder and timm families,
torchslim beside Torch-Pruning 1.6.1 on the same models in the same run.

Per model (random init, 10 classes, no weights downloaded) three checks:

1. prune in both settings -- l2 global to 0.5 of the MACs, taylor global to 0.33: the
   output shape kept, the MAC target met (counted by one counter for both tools), the
   caller's model untouched;
2. the l2 model saved, then loaded in a fresh Python process: outputs bit-identical;
3. the l2 model to int8: the library function behind ``torchslim quantize --method int8`` (ONNX Runtime
   static QDQ) with its output within ``INT8_TOLERANCE`` (relative L2) of the float model,
   and the float ONNX export agreeing with ONNX Runtime (rtol 1e-3, atol 1e-4).

Torch-Pruning's models go through checks 1 and the float ONNX export (it saves by
pickling, which torchslim's loader never does).  A case passes when all its checks hold; a
one-line refusal (``UserError``) is counted apart from a crash.  Each (model, tool) runs in
its own process, one at a time, so one tool's time limit never costs the other its result.

    python benchmarks/prune_coverage.py                      # everything, both tools
    python benchmarks/prune_coverage.py --models torchvision:resnet18 timm:convnext_atto
    python benchmarks/prune_coverage.py --one torchvision:vit_b_16 --tools torchslim   # JSON out

Results are kept in ``--results`` (resumable, merged per tool); the table goes into BENCHMARKS.md.
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

from tests.prune.thirdparty import (build_source, builder_size, reload_in_fresh_process,  # noqa: E402
                                    smallest_per_family, torchvision_builders)

SETTINGS = (("l2", 0.5), ("taylor", 0.33))
TOOLS = ("torchslim", "torch-pruning")
TIMM = ("resnet18", "resnet50", "efficientnet_b0", "efficientnet_lite0", "mobilenetv3_large_100",
        "mobilenetv3_small_100", "convnext_atto", "convnext_tiny", "regnetx_002", "regnety_002",
        "ghostnet_050", "ghostnet_100", "vit_tiny_patch16_224", "vit_small_patch16_224",
        "deit_tiny_patch16_224", "deit_small_patch16_224")
# --smallest: the smallest builder of every torchvision family, these, and one timm model per family
EXTRA = ("efficientnet_v2_s", "swin_v2_t")
TIMM_SMALL = ("resnet18", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnety_002",
              "ghostnet_050", "vit_tiny_patch16_224", "deit_tiny_patch16_224")
# VGG's classifier follows an adaptive pool to 7x7: from the 2x2 maps of a 64x64 input that pool
# upsamples, which ONNX export cannot express; at 224 it is an identity (as alexnet's 6x6 at 224)
EXPORT_SIZE = {f"torchvision:{name}": 224 for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
                                                        "vgg16_bn", "vgg19", "vgg19_bn")}
# relative L2 error of the int8 logits against the float model's on noise images: random-init
# networks land at 0.01-0.3; a wrong graph or broken scales gives about 1 or more
INT8_TOLERANCE = 0.5


def _calibration(shape):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, *shape, generator=generator), torch.randint(0, 10, (4,), generator=generator))]


def _ours(model, example, criterion, target, batches):
    from torchslim.prune import PruneConfig, prune

    # BatchNorm statistics kept: re-estimated from 4 noise images, an untrained network's
    # activations grow by orders of magnitude, and int8 calibrated on those images then measures
    # the noise, not the export
    config = PruneConfig(criterion=criterion, target_macs=target, scope="global", recalibrate_bn=False)
    return prune(model, config, batches, example_inputs=example).model


def _torch_pruning(model, example, criterion, target, batches):
    """Torch-Pruning as its README drives it: global, the classifier ignored, stepped until
    the MAC target is met (twelve steps of 7.5% of the channels at most)."""
    import torch_pruning as tp  # benchmark-only dependency

    from torchslim.profile import count_macs

    work = copy.deepcopy(model)
    base = count_macs(work, tuple(example.shape[1:]))
    # the 10-class output layers, a Linear or (squeezenet) a 1x1 Conv2d
    heads = [m for m in work.modules() if (isinstance(m, torch.nn.Linear) and m.out_features == 10)
             or (isinstance(m, torch.nn.Conv2d) and m.out_channels == 10)]
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


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"


class _NoFastPath:
    """nn.MultiheadAttention's eval fast path (aten::_native_multi_head_attention) has no ONNX
    export, pruned or not: export the composite path."""

    def __enter__(self):
        self.fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.fast)


def _onnx_check(model, shape, folder) -> None:
    from torchslim.export.onnx import export_onnx

    with _NoFastPath():
        export_onnx(model, os.path.join(folder, "float.onnx"), shape)


@torch.no_grad()
def _int8_error(model, shape, batches, folder) -> float:
    """Relative L2 error of the int8 ONNX Runtime model against ``model`` on held-out noise."""
    from torchslim.quant.int8 import quantize_int8

    with _NoFastPath():
        int8 = quantize_int8(model, [x for x, _ in batches], shape, path=os.path.join(folder, "int8.onnx"))
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(5))
    expected, got = model(x), int8(x)
    return float((got - expected).norm() / expected.norm().clamp_min(1e-12))


def _deploy_checks(tool: str, pruned, shape, example, batches) -> dict:
    """Checks 2 and 3 on a model that passed check 1: {"status", "detail", "int8_error"}."""
    with tempfile.TemporaryDirectory() as folder:
        if tool == "torchslim":
            try:
                differs = reload_in_fresh_process(pruned, example, folder)
            except Exception as error:  # a crash is a result here
                differs = "save: " + _first_line(error)
            if differs:
                return {"status": "reload", "detail": differs}
        try:
            _onnx_check(pruned, shape, folder)
        except Exception as error:
            return {"status": "onnx", "detail": _first_line(error)}
        if tool != "torchslim":
            return {"status": "pass"}
        try:
            error = _int8_error(pruned, shape, batches, folder)
        except Exception as exc:
            return {"status": "int8", "detail": _first_line(exc)}
        if not error <= INT8_TOLERANCE:
            return {"status": "int8", "detail": f"int8 relative error {error:.3f}", "int8_error": round(error, 4)}
        return {"status": "pass", "int8_error": round(error, 4)}


def _case(tool, model, shape, criterion, target, deploy: bool) -> dict:
    from torchslim.errors import UserError
    from torchslim.profile import count_macs

    prune_with = _ours if tool == "torchslim" else _torch_pruning
    example = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))
    before, expected = _state(model), model(example).shape
    base = count_macs(model, shape)
    batches = _calibration(shape)
    start = time.perf_counter()
    try:
        pruned = prune_with(model, example, criterion, target, batches)
    except UserError as error:
        return {"status": "refused", "detail": str(error).splitlines()[0][:200]}
    except Exception as error:  # a crash is a result here
        return {"status": "crash", "detail": _first_line(error)}
    seconds = time.perf_counter() - start
    after = _state(model)
    untouched = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        try:
            shape_ok = pruned(example).shape == expected
        except Exception as error:
            return {"status": "broken", "detail": _first_line(error)}
    share = count_macs(pruned, shape) / base
    result = {"share": round(share, 4), "seconds": round(seconds, 1), "untouched": untouched, "shape_ok": shape_ok}
    if not (untouched and shape_ok):
        return {**result, "status": "broken", "detail": "caller's model changed" if not untouched else "output shape"}
    if share > target * 1.001:
        return {**result, "status": "missed", "detail": f"kept {share:.3f} of the MACs"}
    if not deploy:
        return {**result, "status": "pass"}
    return {**result, **_deploy_checks(tool, pruned, shape, example, batches)}


@torch.no_grad()
def _fill_zero_heads(model) -> None:
    """Random weights for linear layers initialised to zero (torchvision's ViT head): an all-zero
    output would make every output check, int8 included, pass vacuously."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.any():
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)


def run_one(source: str, tools, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    model, shape = build_source(source, size=EXPORT_SIZE.get(source))
    _fill_zero_heads(model)
    out = {"source": source, "input": "x".join(map(str, shape))}
    for tool in tools:
        for index, (criterion, target) in enumerate(SETTINGS):
            out[f"{tool}/{criterion}"] = _case(tool, model, shape, criterion, target, deploy=index == 0)
    return out


def _sources(args) -> list[str]:
    if args.models:
        return args.models
    if args.smallest:
        return [f"torchvision:{n}" for n in smallest_per_family(torchvision_builders())] + \
            [f"torchvision:{n}" for n in EXTRA] + [f"timm:{n}" for n in TIMM_SMALL]
    names = sorted(torchvision_builders(), key=lambda n: (builder_size(n), n))  # small ones finish first
    return [f"torchvision:{n}" for n in names] + [f"timm:{n}" for n in TIMM]


def _cell(case: dict | None) -> str:
    if case is None:
        return ""
    if case.get("status") == "pass":
        return f"pass {case['share']:.2f}"
    return f"{case.get('status', '?')}: {case.get('detail', '')}".replace("|", "/")[:90]


def _summary(results: dict, tool: str, family: str) -> str | None:
    keys = [f"{tool}/{c}" for c, _ in SETTINGS]
    rows = [[r[k].get("status") for k in keys] for s, r in results.items()
            if s.startswith(family + ":") and all(k in r for k in keys)]
    rows = [row for row in rows if "timeout" not in row]
    if not rows:
        return None
    passed = sum(all(s == "pass" for s in row) for row in rows)
    refused = sum("refused" in row and all(s in ("pass", "refused") for s in row) for row in rows)
    checks = "prune, save/reload in a fresh process, int8 + ONNX" if tool == "torchslim" else "prune, ONNX"
    return (f"- **{tool}**, {family}: {passed}/{len(rows)} models pass every check ({checks}) "
            f"({100 * passed / len(rows):.1f}%); {refused} more refused with one line.")


def _not_run(results: dict, planned: list[str], tools) -> list[str]:
    lines = []
    for tool in tools:
        for family in ("torchvision", "timm"):
            members = [s for s in planned if s.startswith(family + ":")]
            missing = [s.split(":", 1)[1] for s in members if f"{tool}/{SETTINGS[0][0]}" not in results.get(s, {})]
            if members and len(missing) == len(members):
                lines.append(f"- **{tool}**, {family}: not run.")
            elif missing:
                named = ", ".join(missing) if len(missing) <= 24 else "every model without a cell in the table"
                lines.append(f"- **{tool}**, {family}: {len(members) - len(missing)} of {len(members)} models run; "
                             f"not run: {named}.")
    return lines


def _report(results: dict, tools, seconds: float, ran: str | None = None, planned=None, threads: int = 2) -> str:
    keys = [f"{t}/{c}" for t in tools for c, _ in SETTINGS]
    rows = [[source, result.get("input", "")] + [_cell(result.get(k)) for k in keys]
            for source, result in results.items()]
    lines = [line for tool in tools for family in ("torchvision", "timm")
             if (line := _summary(results, tool, family))]
    unfinished = [f"{s} ({k.split('/')[0]})" for s, r in results.items() for k in keys
                  if k.endswith(SETTINGS[0][0]) and r.get(k, {}).get("status") == "timeout"]
    if unfinished:
        lines.append(f"- Not finished within the per-model time limit (not counted): {', '.join(unfinished)}.")
    lines += _not_run(results, planned or list(results), tools)
    return "\n".join([
        "## Pruning coverage: torchvision and timm classifiers",
        "",
        f"Command: `{ran or command_line()}`  ",
        f"Hardware: {hardware()}" + (f"; {seconds / 60:.0f} min in all." if not ran else ".")
        + f" Each model's process ran {threads} torch thread(s).",
        "",
        "Random init, 10 classes; input 3x64x64 (alexnet and VGG 224: ONNX export needs their adaptive pools "
        "not to upsample; inception_v3 96; "
        "maxvit_t 224; ViT/DeiT 64 via their image-size argument, vit_h_14 56). Settings: l2 global to 0.5 of "
        "the MACs, taylor global to 0.33 (one calibration batch of 4; BatchNorm statistics kept, as re-estimating "
        "them from 4 noise images on an untrained network inflates its activations by orders of magnitude). Checks: (1) in both settings, output shape "
        "kept, MAC target met (same counter for both tools), caller's model untouched; (2) on the l2 model, "
        "torchslim.save, then "
        "torchslim.load in a fresh process, outputs bit-identical; (3) static int8 through ONNX Runtime (the "
        f"function behind `torchslim quantize --method int8`) within {INT8_TOLERANCE} relative L2 error of the "
        "float model, and its float ONNX export agreeing with ONNX Runtime (rtol 1e-3, atol 1e-4). Torch-Pruning "
        "1.6.1 runs check (1) and the float ONNX export (its models save by pickling); it is driven as its README "
        "shows (MetaPruner, global, the 10-class head ignored, stepped until the target is met), with no "
        "per-model configuration (no attention-head hints).",
        "",
        *lines,
        "",
        markdown_table(["model", "input"] + [k.replace("/", " ") for k in keys], rows),
        "",
        "An empty cell: that tool was not run on that model.",
    ])


def _run_child(source: str, tool: str, timeout: int, threads: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--one", source, "--tools", tool,
               "--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {f"{tool}/{c}": {"status": "timeout", "detail": f"over {timeout} s"} for c, _ in SETTINGS}
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    crash = {"status": "crash", "detail": (done.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return {f"{tool}/{c}": dict(crash) for c, _ in SETTINGS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="sources (torchvision:NAME, timm:NAME); default all")
    parser.add_argument("--one", help="run one source in this process and print its JSON")
    parser.add_argument("--smallest", action="store_true",
                        help="the smallest torchvision builder of each family and one timm model per family")
    parser.add_argument("--report-only", action="store_true", help="write the table from --results, run nothing")
    parser.add_argument("--ran", help="with --report-only: the commands that gathered the results")
    parser.add_argument("--tools", nargs="*", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--results", default=os.path.join(tempfile.gettempdir(), "prune_coverage.json"))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per model and tool")
    parser.add_argument("--retry", nargs="*", default=[], help="statuses to run again (e.g. timeout crash)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each model's process")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="more results files (e.g. one per tool, run side by side) merged into the report")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.tools, args.threads)))
        return
    results = json.load(open(args.results)) if os.path.exists(args.results) else {}
    for path in args.merge:  # per model, the cases of each tool
        for source, cases in json.load(open(path)).items():
            results.setdefault(source, {}).update(cases)
    start = time.perf_counter()
    for source in [] if args.report_only else _sources(args):
        for tool in args.tools:
            done = results.get(source, {})
            statuses = [done.get(f"{tool}/{c}", {}).get("status") for c, _ in SETTINGS]
            if all(s is not None and s not in args.retry for s in statuses):
                continue
            results.setdefault(source, {}).update(_run_child(source, tool, args.timeout, args.threads))
            print(source, tool, json.dumps({k: v for k, v in results[source].items() if k.startswith(tool)}),
                  flush=True)
            with open(args.results + ".tmp", "w") as handle:
                json.dump(results, handle, indent=1)
            os.replace(args.results + ".tmp", args.results)
    body = _report({s: results[s] for s in _sources(args) if s in results}, args.tools, time.perf_counter() - start,
                   args.ran if args.report_only else None, _sources(args), args.threads)
    print(body)
    if not args.no_write:
        write_section("prune_coverage", body)


if __name__ == "__main__":
    main()
