"""Lookup-table inference of product-quantized Linear layers against the float layer.

    python benchmarks/backend_pq_lut.py [--threads 1] [--repeats 41]

For each shape (in, out, sub-vector d, codewords K) a PQ layer with random
codebooks and codes is timed three ways on the same inputs: the float
``nn.Linear`` holding its decoded weight (one GEMM), and
:class:`torchslim.codebook.lut.PQLookupLinear` (tables ``x_s . C[s, k]``, then
sums by code) on the native kernel (csrc/pqlut.h: AVX2 gathers of 8 table
entries) and on its PyTorch path (``torch.take`` per input at batch 1,
``embedding_bag`` at batch 32).  Calls alternate and the medians are compared,
since the machine's speed drifts; the CPU time other processes took during the
run is recorded.  "max rel. diff" is the native output's largest difference from
the float layer's over the largest output magnitude: the paths add in different
orders, nothing else differs.
"""

from __future__ import annotations

import argparse

import torch

from common import command_line, hardware, markdown_table, write_section

from torchslim.codebook.lut import PQLookupLinear
from torchslim.deploy import isa
from torchslim.codebook.modules import PQLinear
from torchslim.profile.hardware import OtherLoad
from torchslim.profile.latency import compare_latency

# (in, out, subvector, codewords): lenet300's FC1, a VGG-style classifier, an AlexNet-sized FC
SHAPES = [(784, 300, 4, 64), (512, 512, 4, 64), (512, 512, 8, 256), (4096, 4096, 4, 64), (4096, 4096, 8, 256)]


def random_pq(shape) -> PQLinear:
    in_features, out_features, subvector, codewords = shape
    layer = PQLinear(in_features, out_features, subvector=subvector, codewords=codewords).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.codebooks.copy_(torch.randn(layer.codebooks.shape, generator=generator) / in_features ** 0.5)
        layer.codes.copy_(torch.randint(codewords, layer.codes.shape, generator=generator))
        layer.bias.copy_(torch.randn(out_features, generator=generator))
    return layer


def shape_row(shape, batch, dense, native, pytorch, args) -> list:
    in_features, out_features, subvector, codewords = shape
    x = torch.randn(batch, in_features)
    with torch.no_grad():
        reference = dense(x)
        diff = float((native(x) - reference).abs().max() / reference.abs().max())
        t = compare_latency({"float": dense, "native": native, "pytorch": pytorch}, (in_features,), batch,
                            args.threads, repeats=args.repeats)
    ms = {name: t[name]["median_ms"] for name in ("float", "native", "pytorch")}
    table_ops = in_features * codewords + in_features // subvector * out_features
    return [f"{in_features}x{out_features}", subvector, codewords, batch,
            f"{in_features * out_features / table_ops:.1f}x", f"{ms['float']:.3f}", f"{ms['native']:.3f}",
            f"{ms['float'] / ms['native']:.2f}x", f"{ms['pytorch']:.3f}", f"{ms['float'] / ms['pytorch']:.2f}x",
            f"{diff:.1e}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with OtherLoad() as load:
        for shape in SHAPES:
            layer = random_pq(shape)
            dense, native, pytorch = layer.to_float().eval(), PQLookupLinear(layer), PQLookupLinear(layer)
            pytorch.native = False
            for batch in (1, 32):
                rows.append(shape_row(shape, batch, dense, native, pytorch, args))
                print(" | ".join(map(str, rows[-1])), flush=True)
    quiet = "busy: other jobs shared the cores" if load.busy else "quiet"
    other = f"{load.cores:.2f} of the cores busy on average ({quiet})" if load.cores is not None else "not measured"
    body = ["## Back-end: lookup-table inference of PQ Linear layers", "", f"Command: `{command_line()}`", "",
            f"Hardware: {hardware()}; kernel ISA: {isa()}", "",
            "Float `nn.Linear` with the decoded weight against `PQLookupLinear` (per-input tables of codeword dot "
            "products, then sums by code) on the native kernel (AVX2 gathers of 8 table entries) and on its PyTorch "
            "path (`torch.take` at batch 1, `embedding_bag` at batch 32), calls interleaved, medians of "
            f"{args.repeats}; compare the ratios, not the times.  During the run other processes kept {other}.  "
            "*ops ratio* is the float layer's multiply-adds over the table path's multiply-adds plus look-ups.", "",
            markdown_table(["layer", "d", "K", "batch", "ops ratio", "float ms", "native ms", "float / native",
                            "PyTorch path ms", "float / PyTorch path", "max rel. diff"], rows)]
    write_section("backend-pq-lut", "\n".join(body))


if __name__ == "__main__":
    main()
