"""The packed epilogue's integer thresholds against its float test, on compiled vgg14.

    python benchmarks/epilogue_ab.py [--widths 0.5,1.0] [--repeats 200] [--no-write]

Two copies of the same compiled model per network: one as ``compile`` builds it (each packed
layer compares the exact integer sums with integer thresholds), one whose layers were told to
use the float test ``sgn * v >= threshold`` instead (the path thermometer-coded layers keep).
Both must give the same outputs bit for bit, else the script stops; then they alternate in
blocks of 5 calls (torchslim.deploy.bench.compare_blocks), batch 1, 1 thread.
"""

from __future__ import annotations

import argparse

import torch

from common import OtherLoad, command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, build, compile
from torchslim.deploy.bench import compare_blocks
from torchslim.quant import QuantConfig, freeze, quantize

METHODS = {"XNOR": "xnor", "HWGQ+BWN 2-bit": "hwgq-zero-uniform-bwn"}
SHAPE = (3, 32, 32)


def pair(method: str, width: float) -> tuple:
    """(integer thresholds, float test) compiled copies of one random-weight vgg14."""
    torch.manual_seed(0)
    frozen = freeze(quantize(models.create("vgg14", width_mult=width), QuantConfig(method=method)).eval()).eval()
    integer, floats = compile(frozen, threads=1), compile(frozen, threads=1)
    switched = 0
    for module in floats.modules():
        if isinstance(module, PackedBinaryConv2d) and module.kernel().desc.ithr:
            module.kernel().desc.ithr = None  # the float test: copies of the descriptor are taken per call
            switched += 1
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if not torch.equal(integer(x), floats(x)):
            raise SystemExit("the two epilogues disagree: stop")
    return integer, floats, switched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0.5,1.0")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with OtherLoad() as load:
        for width in (float(w) for w in args.widths.split(",")):
            for label, method in METHODS.items():
                integer, floats, switched = pair(method, width)
                ms = compare_blocks({"int": integer, "float": floats}, SHAPE, 1, 1, repeats=args.repeats)
                a, b = ms["int"]["median_ms"], ms["float"]["median_ms"]
                rows.append([f"vgg14 w{width}", label, switched, f"{b:.4f}", f"{a:.4f}", f"**{b / a:.3f}x**"])
    body = "\n".join([
        "## Packed epilogue: integer thresholds against the float test (compiled vgg14)",
        "",
        f"Command: `{command_line()}`  ",
        f"Hardware: {hardware()}; kernel ISA: {build.isa()}; during the run {load.describe()}.",
        "",
        "Random-weight vgg14, input 3x32x32, batch 1, 1 thread; the same compiled model twice, its packed-output "
        "layers on integer thresholds or on the float test, outputs equal bit for bit; block-interleaved medians "
        f"({args.repeats} timed calls each).",
        "",
        markdown_table(["network", "activations", "layers switched", "float test ms", "integer ms", "speed-up"], rows),
    ])
    print(body)
    if not args.no_write:
        write_section("epilogue-ab", body)


if __name__ == "__main__":
    main()
