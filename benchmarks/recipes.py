"""The shipped recipes, full variant: before-and-after table and wall time for each.

Each recipe runs with ``torchslim compress`` (the same code path a user runs)
into benchmarks/out/recipes/NAME, which makes the script resumable: rerun it
after an interruption and finished stages are reused.  The numbers come from
each run's report.json; latency is batch 1, 1 thread, interleaved in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import ROOT, command_line, hardware, markdown_table, write_section

from torchslim.pipeline import compress, shipped_recipes

OUT = os.path.join(ROOT, "benchmarks", "out", "recipes")


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def section(name: str, report: dict) -> str:
    before, after = report["table"]
    rows = []
    for row in report["table"]:
        lat = row["latency_ms"]
        rows.append([row["model"], f"{row['top1']:.4f}", f"{row['params']:,}", f"{row['macs']:,}",
                     f"{row['size_bytes']:,}", f"{row['packed_bytes']:,}", _ms(lat["float"]), _ms(lat["int8"]),
                     _ms(lat["binary"])])
    stages = [[s["index"], s["name"], f"{s['seconds']:.0f}", "-" if s["top1"] is None else f"{s['top1']:.4f}",
               f"{s['macs']:,}" if s["macs"] else "-", f"{s['size_bytes']:,}"] for s in report["stages"]]
    return "\n".join([
        f"## Recipe {name} (full variant)", "",
        f"Command: `{command_line()}` (runs `torchslim compress --recipe {name} --out benchmarks/out/recipes/{name}`)",
        "", f"Hardware: {hardware()}; latency at batch 1, {report['threads']} thread, interleaved in one run", "",
        report["summary"], "",
        markdown_table(["model", "top-1", "params", "MACs", "bytes on disk", "packed bytes", "float ms",
                        "int8 ms (ORT)", "binary ms"], rows), "",
        f"top-1 {before['top1']:.4f} -> {after['top1']:.4f} ({100 * (after['top1'] - before['top1']):+.2f} points); "
        f"MACs {after['macs'] / before['macs']:.1%} of the original; packed file "
        f"{before['size_bytes'] / after['packed_bytes']:.1f}x smaller than the original's float file; "
        f"speed-up over the original's float latency: {before['latency_ms']['float'] / after['latency_ms']['float']:.2f}x"
        " in float"
        + ("" if after["latency_ms"]["binary"] is None else
           f", {before['latency_ms']['float'] / after['latency_ms']['binary']:.2f}x packed binary")
        + f", {before['latency_ms']['float'] / after['latency_ms']['int8']:.2f}x ORT int8. The stages ran for {report['seconds']:.0f} s in all "
        "(each stage's own time, measured when it ran; a resumed run reuses finished stages).", "",
        markdown_table(["#", "stage", "seconds", "top-1", "MACs", "bytes"], stages),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(shipped_recipes()))
    parser.add_argument("--quick", action="store_true", help="the quick variants (no BENCHMARKS.md update)")
    parser.add_argument("--render", action="store_true",
                        help="rewrite the sections from the runs' report.json files; run nothing")
    args = parser.parse_args()
    for name in args.recipes.split(","):
        if args.render:
            with open(os.path.join(OUT, name, "report.json")) as handle:
                write_section(f"recipe-{name}", section(name, json.load(handle)))
            continue
        began = time.perf_counter()
        out = os.path.join(OUT, name + ("-quick" if args.quick else ""))
        report = compress(name, out, quick=args.quick, progress=False)
        wall = time.perf_counter() - began
        print(json.dumps({"recipe": name, "seconds": round(wall, 1), "table": report["table"]}), flush=True)
        if not args.quick:
            write_section(f"recipe-{name}", section(name, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
