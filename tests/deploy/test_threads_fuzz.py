"""The kernels' thread pool: any thread count gives the 1-thread output bit for bit (seeded fuzz).

Each participant owns a contiguous segment of a layer's work items and steals from the
back of the others' segments; which thread runs which item changes from call to call,
so every shape runs several times at several thread counts.
"""
import random

import pytest
import torch

from torchslim import models
from torchslim.deploy import build, compile
from torchslim.deploy.kernels import binary_conv2d, pack_weight_codes
from torchslim.deploy.modules import level_encoding
from torchslim.quant import QuantConfig, freeze, quantize

pytestmark = pytest.mark.skipif(build.native_library() is None, reason="no C compiler")

THREADS = (2, 3, 4, 7)


def _case(seed: int):
    rng = random.Random(seed)
    k = rng.choice([1, 3, 3, 5])
    stride, pad = rng.choice([1, 1, 2]), rng.randint(0, k // 2 + 1)
    h, w = rng.randint(k, 19), rng.randint(k, 17)
    cin, cout = rng.choice([rng.randint(1, 70), 64, 128, rng.randint(129, 260)]), rng.randint(1, 200)
    return cin, cout, h, w, k, stride, pad, rng.randint(1, 3), rng.choice([None, [0.0, 0.5, 1.0, 1.5]])


@pytest.mark.parametrize("seed", range(16))
def test_every_thread_count_gives_the_one_thread_output(seed):
    cin, cout, h, w, k, stride, pad, batch, levels = _case(seed)
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        thresholds = steps = None
        x = torch.randn(batch, cin, h, w, generator=g)
    else:
        thresholds, steps = level_encoding(levels)[:2]
        x = torch.tensor(levels)[torch.randint(len(levels), (batch, cin, h, w), generator=g)]
    codes = torch.where(torch.rand(cout, cin, k, k, generator=g) < 0.5, -1, 1).to(torch.int8)
    scale, bias = torch.rand(cout, generator=g) + 0.1, torch.randn(cout, generator=g)
    bits, pops = pack_weight_codes(codes)

    def run(threads):
        return binary_conv2d(x, bits, pops, cin, scale, bias, (stride, stride), (pad, pad), thresholds, steps,
                             threads=threads, binary=levels is not None)

    want = run(1)
    for _ in range(3):
        for threads in THREADS:
            assert torch.equal(run(threads), want), threads


@pytest.mark.parametrize("method, width, batch", [("xnor", 0.25, 1), ("hwgq-zero-uniform-bwn", 0.3, 3)])
def test_compiled_chains_give_the_frozen_output_on_any_thread_count(method, width, batch):
    """Whole chains (packed epilogues and fused pooling between layers) at 1 to 7 kernel threads."""
    torch.manual_seed(5)
    frozen = freeze(quantize(models.create("vgg14", width_mult=width), QuantConfig(method=method)).eval()).eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = frozen(x)
        nets = {t: compile(frozen, threads=t) for t in (1, *THREADS)}
        for _ in range(3):
            for threads, net in nets.items():
                assert torch.equal(net(x), want), threads
