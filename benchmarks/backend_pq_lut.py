"""Lookup-table inference of product-quantized Linear layers against the float layer.

    python benchmarks/backend_pq_lut.py [--threads 1] [--repeats 41]

For each shape (in, out, sub-vector d, codewords K) a PQ layer with random
codebooks and codes is timed two ways on the same inputs: the float
``nn.Linear`` holding its decoded weight (one GEMM), and
:class:`torchslim.codebook.lut.PQLookupLinear` (tables ``x_s . C[s, k]``, then
sums by code: ``torch.take`` per input at batch 1, ``embedding_bag`` at batch 32).  Calls alternate (float, table, float, table,
...) and the medians are compared, since the machine's speed
drifts.  "max rel. diff" is the largest output difference over the largest
output magnitude: the two paths add in different orders, nothing else differs.
"""

from __future__ import annotations

import argparse

import torch

from common import command_line, hardware, markdown_table, write_section

from torchslim.codebook.lut import PQLookupLinear
from torchslim.codebook.modules import PQLinear
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shape in SHAPES:
        layer = random_pq(shape)
        dense, table = layer.to_float().eval(), PQLookupLinear(layer)
        for batch in (1, 32):
            x = torch.randn(batch, shape[0])
            with torch.no_grad():
                reference = dense(x)
                diff = float((table(x) - reference).abs().max() / reference.abs().max())
            with torch.no_grad():
                t = compare_latency({"float": dense, "table": table}, (shape[0],), batch, args.threads,
                                    repeats=args.repeats)
            dense_ms, table_ms = t["float"]["median_ms"], t["table"]["median_ms"]
            in_features, out_features, subvector, codewords = shape
            dense_macs = in_features * out_features
            table_ops = in_features * codewords + in_features // subvector * out_features
            row = [f"{in_features}x{out_features}", subvector, codewords, batch, f"{dense_macs / table_ops:.1f}x",
                   f"{dense_ms:.3f}", f"{table_ms:.3f}", f"{dense_ms / table_ms:.2f}x", f"{diff:.1e}"]
            rows.append(row)
            print(" | ".join(map(str, row)), flush=True)
    body = ["## Back-end: lookup-table inference of PQ Linear layers", "", f"Command: `{command_line()}`", "",
            f"Hardware: {hardware()}", "",
            "Float `nn.Linear` with the decoded weight against `PQLookupLinear` (per-input tables of codeword dot "
            "products, summed by code with `torch.take` at batch 1 and `embedding_bag` at batch 32), calls interleaved, medians of "
            f"{args.repeats}; compare the ratios, not the times.  "
            "*ops ratio* is the float layer's multiply-adds over the table path's multiply-adds plus look-ups.", "",
            markdown_table(["layer", "d", "K", "batch", "ops ratio", "float ms", "table ms", "float / table",
                            "max rel. diff"], rows)]
    write_section("backend-pq-lut", "\n".join(body))


if __name__ == "__main__":
    main()
