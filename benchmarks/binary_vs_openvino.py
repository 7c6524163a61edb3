"""Compiled binary vgg14 against OpenVINO int8 (NNCF), OpenVINO fp32 and ONNX Runtime, in one run.

    python benchmarks/binary_vs_openvino.py [--widths 1.0,0.5] [--repeats 40] [--runs 3] [--no-write]

Random-weight vgg14, batch 1, 1 and 2 threads.  The float runtimes, OpenVINO int8 and the
binary kernels run as fast on random weights as on trained ones; ONNX Runtime int8 does not
(width 0.25, one run on a busy AMD EPYC: 0.46 ms on random weights, 0.11 ms on the base trained
by `torchslim demo --quick`), so its column overstates ONNX Runtime int8's time: compare it on a
trained model (torchslim bench).  Per width, every contender is built once and all of them (each
runtime at 1 and at 2 threads) alternate in blocks of 5 calls (torchslim.deploy.bench.compare_blocks),
so every ratio compares medians of the same run:

- ONNX Runtime fp32, and static int8 (QDQ, per-channel), calibrated on 16 random images;
- OpenVINO fp32 (f32 inference precision) and int8 (NNCF post-training quantization of
  the same float network, 16 random calibration images);
- torchslim XNOR (1-bit weights and activations) and HWGQ + BWN with the zero-anchored
  uniform 2-bit levels D * {0, 1, 2, 3} (two binary-weighted planes), compiled by
  torchslim.deploy.compile; first and last layers float (1 torch thread);
- the accurate form of the same network, bireal_vgg14 (a real shortcut, input BN and RPReLU
  around every binary conv: the models benchmarks/binary_accuracy.py trains), with sign
  (W1A1) or 2-bit (W1A2) activations, its units compiled into the convs' residual epilogue;
  W1A1 once more with ``compile(exact=False)`` (the BatchNorm after the float first conv folded
  into it: outputs within float rounding instead of bit for bit).

The whole run repeats ``--runs`` times; cells give the median over runs.  Then, in one
more interleaved run: the packed layers alone at 1 and 2 threads and the 1x2 / 1x1 cost,
and the compiled networks on each native ISA path this CPU has.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess

import torch
from torch import nn

from common import OtherLoad, command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, build, compile
from torchslim.profile import ort
from torchslim.deploy.bench import compare_blocks, float_twin
from torchslim.export import openvino as ov_runtime
from torchslim.quant import QuantConfig, freeze, quantize

# label -> (network, quantization method); the float network timed on ONNX Runtime and OpenVINO is vgg14
METHODS = {"XNOR": ("vgg14", "xnor"), "HWGQ+BWN 2-bit": ("vgg14", "hwgq-zero-uniform-bwn"),
           "Bi-Real W1A1": ("bireal_vgg14", "bireal"), "Bi-Real W1A2": ("bireal_vgg14", "hwgq-zero-uniform-bwn"),
           "Bi-Real W1A1, exact=False": ("bireal_vgg14", "bireal")}
INEXACT = {"Bi-Real W1A1, exact=False"}  # compiled with exact=False: the stem's BatchNorm folded into its conv
RUNTIMES = ["ORT fp32", "ORT int8", "OV fp32", "OV int8", *METHODS]
SHAPE = (3, 32, 32)


def _frozen(network: str, method: str, width: float) -> nn.Module:
    torch.manual_seed(0)
    return freeze(quantize(models.create(network, width_mult=width), QuantConfig(method=method)).eval()).eval()


def contenders(width: float, threads: tuple) -> tuple[dict, dict]:
    """{(runtime, threads): module} and {runtime: its ISA path} for one width."""
    frozen = {label: _frozen(*spec, width) for label, spec in METHODS.items()}
    twin = float_twin(frozen["XNOR"])
    calibration = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(1))
    f32_bytes = ort.export_onnx_bytes(twin, SHAPE)
    i8_bytes = ort.quantize_qdq(f32_bytes, calibration)
    ov_f32, ov_i8 = ov_runtime.runtime_pair(twin, SHAPE, calibration)
    found, paths = {}, {}
    for t in threads:
        found["ORT fp32", t] = ort.OrtModule(f32_bytes, t)
        found["ORT int8", t] = ort.OrtModule(i8_bytes, t)
        found["OV fp32", t] = ov_runtime.OpenVinoModule(ov_f32, t)
        found["OV int8", t] = ov_runtime.OpenVinoModule(ov_i8, t)
        for label, model in frozen.items():
            found[label, t] = compile(model, threads=t, exact=label not in INEXACT)
    paths["OV fp32"] = ", ".join(found["OV fp32", threads[0]].isa)
    paths["OV int8"] = ", ".join(found["OV int8", threads[0]].isa)
    return found, paths


def timed(found: dict, repeats: int) -> dict:
    """{(runtime, threads): median ms} of one interleaved run."""
    named = {f"{r}@{t}": m for (r, t), m in found.items()}
    result = compare_blocks(named, SHAPE, 1, max(t for _, t in found), repeats=repeats)
    return {key: result[f"{key[0]}@{key[1]}"]["median_ms"] for key in found}


def layer_rows(repeats: int) -> list[list]:
    """Packed layers alone (float in, float out): 1 and 2 threads, 1x1 and 1x2 in one run."""
    rows = []
    for c, size in ((128, 16), (256, 8), (512, 4)):
        torch.manual_seed(c)
        codes = torch.where(torch.rand(c, c, 3, 3) < 0.5, -1, 1).to(torch.int8)
        scale, bias = torch.rand(c), torch.randn(c)
        layers = {}
        for kind, levels in (("1x1", [-1.0, 1.0]), ("1x2", [0.0, 0.5, 1.0, 1.5])):
            for t in (1, 2):
                layer = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, levels)
                layer.threads = t
                layers[f"{kind}@{t}"] = layer
        ms = {k: v["median_ms"] for k, v in compare_blocks(layers, (c, size, size), 1, 2, repeats=repeats).items()}
        rows.append([f"{c}->{c} @ {size}x{size}", *(f"{ms[k]:.4f}" for k in ("1x1@1", "1x1@2", "1x2@1", "1x2@2")),
                     f"{ms['1x1@1'] / ms['1x1@2']:.2f}x", f"{ms['1x2@1'] / ms['1x2@2']:.2f}x",
                     f"{ms['1x2@1'] / ms['1x1@1']:.2f}x"])
    return rows


class OnPath(nn.Module):
    """A compiled model run on one native ISA path."""

    def __init__(self, model: nn.Module, path: str):
        super().__init__()
        self.model, self.path = model, path

    def forward(self, x):
        with build.use_isa(self.path):
            return self.model(x)


def isa_rows(width: float, repeats: int) -> list[list]:
    paths = build.available_isas()
    nets = {label: compile(_frozen(*spec, width), threads=1, exact=label not in INEXACT)
            for label, spec in METHODS.items()}
    named = {f"{label}@{p}": OnPath(net, p) for label, net in nets.items() for p in paths}
    ms = {k: v["median_ms"] for k, v in compare_blocks(named, SHAPE, 1, 1, repeats=repeats).items()}
    return [[f"vgg14 w{width} {label}", *(f"{ms[f'{label}@{p}']:.3f}" for p in paths)] for label in nets], paths


def _cpu_flags() -> str:
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx2", "avx512f", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16")
    return ", ".join(f for f in wanted if f" {f} " in flags.replace("\n", " ") + " ") or "none of AVX2/AVX-512"


def _med(runs: list[dict], key) -> float:
    return statistics.median(run[key] for run in runs)


def width_table(width: float, runs: list[dict], threads: tuple) -> list[list]:
    rows = []
    for t in threads:
        ms = {r: _med(runs, (r, t)) for r in RUNTIMES}
        for label in METHODS:
            rows.append([f"w{width}", t, *(f"{ms[r]:.3f}" for r in RUNTIMES[:4]), label, f"{ms[label]:.3f}",
                         f"**{ms['OV int8'] / ms[label]:.2f}x**", f"**{ms['ORT fp32'] / ms[label]:.2f}x**"])
    return rows


def thread_rows(width: float, runs: list[dict]) -> list[list]:
    return [[f"w{width}", r, f"{_med(runs, (r, 1)):.3f}", f"{_med(runs, (r, 2)):.3f}",
             f"{_med(runs, (r, 1)) / _med(runs, (r, 2)):.2f}x"] for r in RUNTIMES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1.0,0.5")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin the whole process (every runtime alike) to this CPU; its own section")
    parser.add_argument("--no-write", action="store_true", help="print the section; do not touch BENCHMARKS.md")
    args = parser.parse_args()
    if args.cpu is not None:  # threads created from now on inherit the mask: OpenVINO's and ours too
        os.sched_setaffinity(0, {args.cpu})
    pinning = ("the process and every thread it starts pinned to CPU %d (os.sched_setaffinity), every runtime alike, "
               "so no call migrates between cores" % args.cpu) if args.cpu is not None else "no pinning"
    ov_runtime.require("this benchmark")
    widths, threads = [float(w) for w in args.widths.split(",")], (1,) if args.cpu is not None else (1, 2)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    tables, thread_tables, isa_tables, paths = [], [], [], {}
    with OtherLoad() as load:
        for width in widths:
            found, paths = contenders(width, threads)
            runs = [timed(found, args.repeats) for _ in range(args.runs)]
            tables += width_table(width, runs, threads)
            thread_tables += thread_rows(width, runs) if len(threads) > 1 else []
        layers = layer_rows(args.repeats) if len(threads) > 1 else []
        for width in widths:
            rows, native = isa_rows(width, args.repeats)
            isa_tables += rows
    paths.update({"ORT fp32 / int8": "MLAS, dispatched inside ONNX Runtime by cpuid (not reported)",
                  "torchslim": build.isa()})
    body = "\n".join([
        "## Binary vgg14 (plain and Bi-Real) against OpenVINO int8 (NNCF) and ONNX Runtime (batch 1, 1 and 2 threads"
        + (f", pinned to one CPU)" if args.cpu is not None else ")"),
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; CPU flags: {_cpu_flags()}  ",
        f"Load: `{uptime}` at the start; during the run {load.describe()}.  ",
        "ISA path per runtime: " + "; ".join(f"{k}: {v}" for k, v in paths.items()) + ".  ",
        (f"Random-weight vgg14 (the float network every runtime but ours runs) and its binary forms: plain (XNOR, "
         f"HWGQ+BWN) and Bi-Real (the accurate form, with real shortcuts), input 3x32x32; every runtime at 1 and 2 threads alternates in blocks of 5 calls "
         f"after a 50 ms pause, {args.repeats} timed calls each, in {args.runs} whole runs; cells are the median "
         f"over runs of each run's median (ms); {pinning}.  OpenVINO: f32 inference precision, one stream; int8 by "
         "NNCF post-training quantization on 16 random images (ONNX Runtime's int8 on the same).  Targets: "
         ">= 2x OpenVINO int8 at width 1.0, >= 1.5x at width 0.5, >= 4x ONNX Runtime fp32 at both.  Top-1 is not "
         "measured here (random weights).  ONNX Runtime int8 runs several times slower on random weights than on "
         "trained ones (OpenVINO and the float runtimes do not), so its column overstates its time."),
        "",
        markdown_table(["width", "threads", "ORT fp32", "ORT int8", "OV fp32", "OV int8", "binary model", "binary ms",
                        "vs OV int8", "vs ORT fp32"], tables),
        "",
        *([] if not thread_tables else [
            "Two threads against one, same runs (ms at 1 thread, ms at 2 threads, speed-up):",
            "",
            markdown_table(["width", "runtime", "1 thread", "2 threads", "speed-up"], thread_tables),
            "",
            ("Packed 3x3 layers alone (float in and out, padding 1), one interleaved run: 1x1 = 1-bit activations, "
             "1x2 = 2-bit zero-anchored uniform activations (two binary-weighted planes counted in one pass over "
             "the weights):"),
            "",
            markdown_table(["layer", "1x1 1 thr", "1x1 2 thr", "1x2 1 thr", "1x2 2 thr", "1x1 2 thr speed-up",
                            "1x2 2 thr speed-up", "1x2 / 1x1"], layers),
            ""]),
        "The compiled networks on each native ISA path of this CPU (1 thread, ms, one interleaved run):",
        "",
        markdown_table(["network", *native], isa_tables),
    ])
    if not args.no_write:
        write_section("binary-vs-openvino" + ("-pinned" if args.cpu is not None else ""), body)
    print(body)


if __name__ == "__main__":
    main()
