"""A/B of two builds of the binary kernels: the working tree's against a git revision's.

    python benchmarks/kernels_ab.py --against REV [--threads 1] [--repeats 400] [--no-write]

Both sources are compiled with the same compiler and flags and loaded side by side in
one process.  Each layer (the shapes and activation kinds of kernels_binary.py) gets
one weight set and one float input; the two builds' native calls then alternate in
blocks of 5 calls (which build goes first alternates too), so both see the same
machine state, and the speed-up is the median of the per-block ratios with its
interquartile range.  Outputs of the two builds must be equal bit for bit, else the
script stops.  Timing one build against another in separate runs on this shared
2-core machine moved by up to 1.5x; ratios from one process do not.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import statistics
import subprocess
import tempfile
import threading
import time

import torch

from common import ROOT, command_line, hardware, markdown_table, write_section
from kernels_binary import KINDS, LAYERS

from torchslim.deploy import PackedBinaryConv2d
from torchslim.deploy import build

CSRC = os.path.relpath(os.path.dirname(build.SOURCE), ROOT)


def compile_revision(rev: str, folder: str) -> ctypes.CDLL:
    """The kernels' sources at ``rev``, built with the flags the package uses."""
    names = subprocess.run(["git", "-C", ROOT, "ls-tree", "--name-only", rev, CSRC + "/"], check=True,
                           capture_output=True, text=True).stdout.split()
    src = os.path.join(folder, "src")
    os.makedirs(src, exist_ok=True)
    for name in names:
        blob = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{name}"], check=True, capture_output=True).stdout
        with open(os.path.join(src, os.path.basename(name)), "wb") as handle:
            handle.write(blob)
    target = os.path.join(folder, "other.so")
    build._compile(build._compiler(), target, os.path.join(src, os.path.basename(build.SOURCE)))
    return build._declare(ctypes.CDLL(target))


def on_library(kernel, lib: ctypes.CDLL):
    """The same prepared kernel (weights, epilogue) calling another build's bk_conv."""
    if lib.bk_conv_desc_size() != ctypes.sizeof(kernel.desc):
        raise SystemExit("the other build's conv descriptor differs from this one's: not comparable")
    other = copy.copy(kernel)
    other._run, other._calls = lib.bk_conv, threading.local()
    return other


def ab_layer(ours, theirs, x: torch.Tensor, threads: int, repeats: int, block: int = 5) -> dict:
    """Per-block ratios theirs / ours of alternating blocks of ``block`` calls.

    Each build has a thread pool of its own, whose workers spin 1 ms after a call: with more than one
    thread, a block starts after a 3 ms pause (the other build's workers are asleep by then) and 2 ms
    of untimed calls (this build's are awake), else the second build's workers would find the core
    held by the first's."""
    for _ in range(20):
        ours(x, threads), theirs(x, threads)
    if not torch.equal(ours(x, threads), theirs(x, threads)):
        raise SystemExit("the two builds' outputs differ")
    times = {"ours": [], "theirs": []}
    ratios = []
    for r in range(repeats):
        order = (("ours", ours), ("theirs", theirs)) if r % 2 == 0 else (("theirs", theirs), ("ours", ours))
        took = {}
        for name, fn in order:
            if threads > 1:
                time.sleep(0.003)
                warm = time.perf_counter()
                while time.perf_counter() - warm < 0.002:
                    fn(x, threads)
            start = time.perf_counter()
            for _ in range(block):
                fn(x, threads)
            took[name] = (time.perf_counter() - start) / block * 1e3
            times[name].append(took[name])
        ratios.append(took["theirs"] / took["ours"])
    q = statistics.quantiles(ratios, n=4)
    return {"ours_ms": statistics.median(times["ours"]), "theirs_ms": statistics.median(times["theirs"]),
            "ratio": statistics.median(ratios), "q1": q[0], "q3": q[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision of the other build")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--repeats", type=int, default=400, help="blocks per build and layer")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.against], check=True,
                         capture_output=True, text=True).stdout.strip()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        lib = compile_revision(args.against, folder)
        for threads in (int(t) for t in args.threads.split(",")):
            for c, oc, size in LAYERS:
                torch.manual_seed(c)
                codes = torch.where(torch.rand(oc, c, 3, 3) < 0.5, -1, 1).to(torch.int8)
                scale, bias = torch.rand(oc), torch.randn(oc)
                x = torch.randn(1, c, size, size)
                for kind, levels in KINDS.items():
                    layer = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, levels)
                    ours = layer.kernel()
                    res = ab_layer(ours, on_library(ours, lib), x, threads, args.repeats)
                    rows.append([f"{c}->{oc} @ {size}x{size}", kind, threads, f"{res['theirs_ms']:.3f}",
                                 f"{res['ours_ms']:.3f}", f"**{res['ratio']:.2f}x** ({res['q1']:.2f}-{res['q3']:.2f})"])
                    print(*rows[-1], flush=True)
    body = "\n".join([
        "## Binary kernels: A/B of two builds in one process",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; kernel ISA: {build.isa()}  ",
        (f"The working tree's kernels against those of revision {rev}, both built with `{' '.join(build.FLAGS)}` "
         f"and called alternately on the same prepared layer and input in blocks of 5 calls ({args.repeats} "
         "blocks each, the first build alternating); 3x3 conv, stride 1, padding 1, float input and output, "
         "batch 1.  Outputs of the two builds were equal bit for bit.  Speed-up: median of the per-block "
         "ratios (interquartile range)."),
        "",
        markdown_table(["layer", "activations", "threads", f"{rev} ms", "working tree ms", "speed-up"], rows),
    ])
    if not args.no_write:
        write_section("kernels-ab", body)
    print(body)


if __name__ == "__main__":
    main()
