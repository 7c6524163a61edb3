"""Lookup-table inference of product-quantized Linear layers against the float layer.

    python benchmarks/backend_pq_lut.py [--threads 1] [--repeats 41]

For each shape (in, out, sub-vector d, codewords K) a PQ layer with random
codebooks and codes is timed three ways on the same inputs: the float
``nn.Linear`` holding its decoded weight (one GEMM), and
:class:`torchslim.deploy.lut.PQLookupLinear` (tables ``x_s . C[s, k]``, then
sums by code) on the native kernel (csrc/pqlut.h: AVX2 gathers of 8 table
entries) and on its PyTorch path (``torch.take`` per input at batch 1,
``embedding_bag`` at batch 32).  Calls alternate and the medians are compared,
since the machine's speed drifts; the CPU time other processes took during the
run is recorded.  "max rel. diff" is the native output's largest difference from
the float layer's over the largest output magnitude: the paths add in different
orders, nothing else differs.

Convolutions: vgg14's 3x3 layer shapes at batch 1, a random PQ conv (codebooks
shared by the kernel's taps, as Q-CNN has them) timed as torch's float conv with
the decoded weight against :class:`torchslim.deploy.lut.PQLookupConv2d`
(csrc/pqconv.h: per-pixel tables, 8 outputs per table load).  Then whole
networks: vgg14 (width 1) with every 3x3 conv but the first product-quantized
(random codes: speed does not depend on their values), lookup tables against
the decoded float network in eager torch and in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import copy

import torch

from common import command_line, hardware, markdown_table, write_section

from torch import nn

from torchslim import models
from torchslim.deploy.lut import PQLookupConv2d, PQLookupLinear, use_lookup_tables
from torchslim.codebook.modules import PQConv2d, PQLinear, materialize
from torchslim.deploy import isa
from torchslim.profile import ort
from torchslim.profile.hardware import OtherLoad
from torchslim.profile.latency import compare_latency

# (in, out, subvector, codewords): lenet300's FC1, a VGG-style classifier, an AlexNet-sized FC
SHAPES = [(784, 300, 4, 64), (512, 512, 4, 64), (512, 512, 8, 256), (4096, 4096, 4, 64), (4096, 4096, 8, 256)]
# (in, out, map size): vgg14's 3x3 convs at 32x32 input; (subvector, codewords): 1 bit per weight (the
# Q-CNN setting of backend_qcnn.py), 1.5 bits, and 1 bit with larger sub-vectors
CONVS = [(64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4), (512, 512, 2)]
CONV_CODES = [(4, 16), (4, 64), (8, 256)]
NETWORK_CODES = [(4, 16), (8, 256)]


def random_pq(shape) -> PQLinear:
    in_features, out_features, subvector, codewords = shape
    layer = PQLinear(in_features, out_features, subvector=subvector, codewords=codewords).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.codebooks.copy_(torch.randn(layer.codebooks.shape, generator=generator) / in_features ** 0.5)
        layer.codes.copy_(torch.randint(codewords, layer.codes.shape, generator=generator))
        layer.bias.copy_(torch.randn(out_features, generator=generator))
    return layer


def random_codes(layer, generator) -> None:
    with torch.no_grad():
        fan_in = layer.codebooks.shape[0] * layer.codebooks.shape[2] * (layer.codes.shape[1] // layer.out_features)
        layer.codebooks.copy_(torch.randn(layer.codebooks.shape, generator=generator) / fan_in ** 0.5)
        layer.codes.copy_(torch.randint(layer.codewords, layer.codes.shape, generator=generator))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.out_features, generator=generator))


def conv_row(shape, codes, args) -> list:
    (c, oc, size), (subvector, codewords) = shape, codes
    layer = PQConv2d(c, oc, 3, padding=1, subvector=subvector, codewords=codewords).eval()
    random_codes(layer, torch.Generator().manual_seed(c))
    dense, native = layer.to_float().eval(), PQLookupConv2d(layer)
    x = torch.randn(1, c, size, size)
    contenders = {"float": dense, "native": native}
    if ort.available():
        contenders["ort"] = ort.OrtModule(ort.export_onnx_bytes(dense, (c, size, size)), args.threads)
    with torch.no_grad():
        reference = dense(x)
        diff = float((native(x) - reference).abs().max() / reference.abs().max())
        t = compare_latency(contenders, (c, size, size), 1, args.threads, repeats=args.repeats)
    ms = {name: t[name]["median_ms"] for name in contenders}
    best = min(ms["float"], ms.get("ort", ms["float"]))
    ops = size * size * (c * codewords + 9 * c // subvector * oc)  # table multiply-adds + look-ups
    return [f"{c}->{oc} @ {size}x{size}", subvector, codewords, f"{(codewords.bit_length() - 1) / subvector:g}",
            f"{size * size * 9 * c * oc / ops:.1f}x", f"{ms['float']:.3f}",
            f"{ms['ort']:.3f}" if "ort" in ms else "n/a", f"{ms['native']:.3f}",
            f"**{best / ms['native']:.2f}x**", f"{diff:.1e}"]


def network_row(codes, args) -> list:
    """vgg14 width 1, every 3x3 conv after the first product-quantized with random codes, batch 1."""
    subvector, codewords = codes
    torch.manual_seed(0)
    model = models.create("vgg14", width_mult=1.0).eval()
    generator = torch.Generator().manual_seed(1)
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels > 3]
    for name, conv in convs:
        pq = PQConv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None,
                      subvector=subvector, codewords=codewords).eval()
        random_codes(pq, generator)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, pq)
    lookup = copy.deepcopy(model)
    use_lookup_tables(lookup)
    dense = materialize(copy.deepcopy(model)).eval()
    contenders = {"float": dense, "lookup": lookup}
    if ort.available():
        contenders["ort"] = ort.OrtModule(ort.export_onnx_bytes(dense, (3, 32, 32)), args.threads)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = dense(x)
        diff = float((lookup(x) - reference).abs().max() / reference.abs().max())
        t = compare_latency(contenders, (3, 32, 32), 1, args.threads, repeats=args.repeats)
    ms = {name: t[name]["median_ms"] for name in contenders}
    ort_ms = ms.get("ort")
    return [f"vgg14 w1, {len(convs)} PQ convs", subvector, codewords, f"{ms['float']:.3f}",
            f"{ort_ms:.3f}" if ort_ms else "n/a", f"{ms['lookup']:.3f}", f"**{ms['float'] / ms['lookup']:.2f}x**",
            f"**{ort_ms / ms['lookup']:.2f}x**" if ort_ms else "n/a", f"{diff:.1e}"]


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
    rows, conv_rows, network_rows = [], [], []
    with OtherLoad() as load:
        for shape in SHAPES:
            layer = random_pq(shape)
            dense, native, pytorch = layer.to_float().eval(), PQLookupLinear(layer), PQLookupLinear(layer)
            pytorch.native = False
            for batch in (1, 32):
                rows.append(shape_row(shape, batch, dense, native, pytorch, args))
                print(" | ".join(map(str, rows[-1])), flush=True)
        for shape in CONVS:
            for codes in CONV_CODES:
                conv_rows.append(conv_row(shape, codes, args))
                print(" | ".join(map(str, conv_rows[-1])), flush=True)
        for codes in NETWORK_CODES:
            network_rows.append(network_row(codes, args))
            print(" | ".join(map(str, network_rows[-1])), flush=True)
    quiet = "busy: other jobs shared the cores" if load.busy else "quiet"
    other = f"{load.cores:.2f} of the cores busy on average ({quiet})" if load.cores is not None else "not measured"
    body = ["## Back-end: lookup-table inference of PQ Linear and Conv2d layers", "", f"Command: `{command_line()}`", "",
            f"Hardware: {hardware()}; kernel ISA: {isa()}", "",
            "Float `nn.Linear` with the decoded weight against `PQLookupLinear` (per-input tables of codeword dot "
            "products, then sums by code) on the native kernel (AVX2 gathers of 8 table entries) and on its PyTorch "
            "path (`torch.take` at batch 1, `embedding_bag` at batch 32), calls interleaved, medians of "
            f"{args.repeats}; compare the ratios, not the times.  During the run other processes kept {other}.  "
            "*ops ratio* is the float layer's multiply-adds over the table path's multiply-adds plus look-ups.", "",
            markdown_table(["layer", "d", "K", "batch", "ops ratio", "float ms", "native ms", "float / native",
                            "PyTorch path ms", "float / PyTorch path", "max rel. diff"], rows),
            "", "**Convolutions** (3x3, padding 1, batch 1): the float conv with the decoded weight in eager torch "
            "and in ONNX Runtime against `PQLookupConv2d` on the native kernel (per-pixel tables `x_s[p] . C[s, k]`, "
            "shared by the 9 taps, then 8 outputs per table load); *speed-up* is over the faster of the two float "
            "runtimes.  *ops ratio*: the conv's multiply-adds over the table's multiply-adds plus the look-ups.", "",
            markdown_table(["layer", "d", "K", "bits/weight", "ops ratio", "torch f32 ms", "ORT f32 ms", "lookup ms",
                            "speed-up", "max rel. diff"], conv_rows),
            "", "**Whole network**, batch 1: vgg14 width 1 with its 3x3 convs after the first product-quantized "
            "(random codes), the decoded float network in eager torch and in ONNX Runtime float32 against the "
            "lookup-table network (`use_lookup_tables`; first conv and classifier float).", "",
            markdown_table(["network", "d", "K", "torch f32 ms", "ORT f32 ms", "lookup ms", "vs torch f32",
                            "vs ORT f32", "max rel. diff"], network_rows)]
    write_section("backend-pq-lut", "\n".join(body))


if __name__ == "__main__":
    main()
