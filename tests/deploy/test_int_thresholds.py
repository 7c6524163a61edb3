"""The packed epilogue compares exact integer sums with integer thresholds (bk_int_thresholds):
its bits must equal the float test ``sgn * v >= thr`` of the reference, also where a threshold
sits exactly on a reachable value, one float step beside it, at +-inf or NaN."""
import random

import pytest
import torch

from torchslim.deploy import PackedBinaryConv2d, build

pytestmark = pytest.mark.skipif(build.native_library() is None, reason="no C compiler")

LEVELS = {"sign": [-1.0, 1.0], "zero-uniform2": [0.0, 0.5, 1.0, 1.5], "zero-uniform2-odd-step": [0.0, 0.3, 0.6, 0.9]}
OUT_LEVELS = {"sign": [-1.0, 1.0], "zero-uniform2": [0.0, 1.0, 2.0, 3.0]}


def _edge_thresholds(layer, count, cout, g):
    """Thresholds on values the layer reaches (D * integer), their float neighbours and midpoints."""
    step = 1.0 if layer.steps is None else float(layer.steps[0])
    reach = 9 * layer.in_channels * (1 if layer.steps is None else 3)
    sums = torch.randint(-reach // 3, reach // 3 + 1, (count, cout), generator=g).to(torch.float32)
    exact = step * sums  # float32 products, as the kernel forms them
    kind = torch.randint(0, 4, (count, cout), generator=g)
    thresholds = torch.where(kind == 0, exact, torch.where(kind == 1, torch.nextafter(exact, exact + 1),
                             torch.where(kind == 2, torch.nextafter(exact, exact - 1), exact + step / 2)))
    thresholds[0, 0], thresholds[-1, 1 % cout] = float("inf"), float("-inf")
    thresholds[0, 2 % cout] = float("nan")
    return thresholds.sort(dim=0).values  # level k + 1 needs at least level k


@pytest.mark.parametrize("levels", list(LEVELS))
@pytest.mark.parametrize("out", list(OUT_LEVELS))
@pytest.mark.parametrize("seed", range(6))
def test_integer_thresholds_give_the_float_tests_bits(levels, out, seed):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    cin, cout = rng.choice([3, 40, 64, 100]), rng.choice([5, 8, 24, 70])
    h, w, pad, pool = rng.randint(4, 9), rng.randint(4, 9), rng.choice([0, 1, 2]), rng.choice([1, 2])
    codes = torch.where(torch.rand(cout, cin, 3, 3, generator=g) < 0.5, -1, 1).to(torch.int8)
    layer = PackedBinaryConv2d.from_codes(codes, torch.ones(cout), None, 1, pad, LEVELS[levels])
    out_levels = OUT_LEVELS[out]
    thresholds = _edge_thresholds(layer, len(out_levels) - 1, cout, g)
    sgn = torch.where(torch.rand(cout, generator=g) < 0.5, -1.0, 1.0)
    layer.fuse_output(out_levels, pool, thresholds, sgn)
    assert layer.kernel().desc.ithr is not None  # the integer path is the one under test
    values = torch.tensor(layer.levels)
    x = values[torch.randint(len(values), (2, cin, h, w), generator=g)]
    layer.fuse_input(torch.tensor([(a + b) / 2 for a, b in zip(values, values[1:])]), "ge") \
        if levels != "sign" else layer.fuse_input(torch.zeros(1), "not_ge")
    want = layer._reference_forward(x)
    for isa in build.available_isas():
        with build.use_isa(isa):
            for threads in (1, 2):
                assert torch.equal(layer.kernel()(x, threads), want), (isa, threads)
