"""Every native ISA path against the reference, over random shapes (seeded)."""
import random

import pytest
import torch

from torchslim import models
from torchslim.deploy import build, compile
from torchslim.deploy.kernels import binary_conv2d, pack_weight_codes, reference_binary_conv2d
from torchslim.deploy.modules import level_encoding, plane_encoding
from torchslim.quant import QuantConfig, freeze, quantize

pytestmark = pytest.mark.skipif(build.native_library() is None, reason="no C compiler")

# 1-bit signs, 2-bit thermometer planes, 2-bit zero-anchored uniform levels D * {0, 1, 2, 3} (two binary planes)
ENCODINGS = {"sign": None, "thermometer2": [0.0, 0.45, 1.1, 2.3], "zero-uniform2": [0.0, 0.5, 1.0, 1.5]}


def _random_case(rng: random.Random):
    """A layer shape: channels off word boundaries, odd spatial sizes, strides and paddings."""
    k = rng.choice([1, 2, 3, 3, 3, 5])
    stride, pad = rng.choice([1, 1, 2, 3]), rng.randint(0, k)
    h, w = rng.randint(1, 13) | 1, rng.randint(1, 12)
    while (h + 2 * pad - k) // stride + 1 < 1 or (w + 2 * pad - k) // stride + 1 < 1:
        h, w = h + 2, w + 2
    cin = rng.choice([rng.randint(1, 63), rng.randint(65, 140), rng.randint(150, 300), 64, 128])
    return cin, rng.randint(1, 80), h, w, k, stride, pad, rng.randint(1, 2), rng.choice([1, 2])


CASES = [_random_case(random.Random(seed)) + (encoding,) for seed in range(24) for encoding in ENCODINGS]


@pytest.mark.parametrize("cin, cout, h, w, k, stride, pad, batch, threads, encoding", CASES)
def test_every_isa_path_is_bit_identical_to_the_reference(cin, cout, h, w, k, stride, pad, batch, threads, encoding):
    g = torch.Generator().manual_seed(cin * 1000 + cout)
    levels = ENCODINGS[encoding]
    binary = encoding.startswith("zero-uniform")
    if levels is None:
        thresholds = steps = None
        x = torch.randn(batch, cin, h, w, generator=g)
        x[x.abs() < 0.05] = 0.0  # exact zeros: sign(0) is +1
    else:
        thresholds, steps = level_encoding(levels)[:2] if binary else plane_encoding(levels)
        x = torch.tensor(levels)[torch.randint(len(levels), (batch, cin, h, w), generator=g)]
    codes = torch.where(torch.rand(cout, cin, k, k, generator=g) < 0.5, -1, 1).to(torch.int8)
    scale, bias = torch.rand(cout, generator=g) + 0.1, torch.randn(cout, generator=g)
    bits, pops = pack_weight_codes(codes)
    want = reference_binary_conv2d(x, codes, scale, bias, (stride, stride), (pad, pad), thresholds, steps, binary)
    paths = build.available_isas()
    assert "portable" in paths
    for name in paths:
        with build.use_isa(name):
            got = binary_conv2d(x, bits, pops, cin, scale, bias, (stride, stride), (pad, pad), thresholds, steps,
                                threads=threads, binary=binary)
        assert torch.equal(got, want), name


def _frozen(method, width, seed):
    torch.manual_seed(seed)
    model = quantize(models.create("vgg14", width_mult=width), QuantConfig(method=method)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics, as after training
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return freeze(model).eval()


@pytest.mark.parametrize("method, width, seed", [("xnor", 0.3, 0), ("hwgq-zero-uniform-bwn", 0.3, 1),
                                                 ("hwgq-bwn", 0.2, 2)])
def test_compiled_network_equals_the_frozen_one_on_every_isa_path(method, width, seed):
    """Whole chains (packed epilogues, fused pooling, float output) on each path, 1 and 2 threads."""
    frozen = _frozen(method, width, seed)
    compiled = compile(frozen)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = frozen(x)
        for name in build.available_isas():
            with build.use_isa(name):
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    assert torch.equal(compiled(x), want), (name, threads)


def test_isa_paths_are_named_and_the_default_is_the_best():
    paths = build.available_isas()
    assert paths[0] == "portable" and set(paths) <= set(build.ISA_NAMES)
    assert build.isa() == paths[-1]
    with build.use_isa("portable"):
        assert build.isa() == "portable"
    assert build.isa() == paths[-1]
    with pytest.raises(ValueError, match="not available"):
        with build.use_isa("sparc"):
            pass


@pytest.mark.parametrize("cap, want", [("portable", "portable"), ("avx2", "popcnt+avx2+bmi"),
                                       ("avx512", "avx512-vpopcntdq")])
def test_the_environment_caps_the_path_for_a_process(cap, want):
    import os
    import subprocess
    import sys

    if want not in build.available_isas():  # the best path at or below the cap instead
        want = build.available_isas()[-1]
    env = {**os.environ, "TORCHSLIM_ISA": cap}
    out = subprocess.run([sys.executable, "-c", "from torchslim.deploy import isa; print(isa())"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == want
