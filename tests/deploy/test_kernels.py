import pytest
import torch

from torchslim.deploy import build
from torchslim.deploy.kernels import (_TORCH_COMPARE, COMPARE, _pack_bool_reference, binary_conv2d, pack_planes,
                                      pack_quantized, pack_activation_signs, pack_weight_codes, reference_binary_conv2d)
from torchslim.deploy.modules import (PackedBinaryConv2d, PackedBinaryLinear, binary_step, encoded_planes,
                                      level_encoding, plane_encoding)

needs_native = pytest.mark.skipif(build.native_library() is None, reason="no C compiler")

# (in, out, size, kernel, stride, padding): odd channel counts, word boundaries, borders
SHAPES = [(1, 1, 5, 3, 1, 1), (3, 7, 9, 3, 1, 1), (63, 5, 6, 3, 2, 1), (64, 64, 8, 3, 1, 1), (65, 13, 7, 3, 1, 2),
          (130, 9, 9, 5, 2, 2), (200, 31, 4, 1, 1, 0), (17, 6, 11, 3, 3, 0), (128, 8, 5, 2, 1, 1),
          (7, 5, 4, 1, 1, 2), (9, 6, 3, 3, 2, 3),  # padding >= kernel: whole windows in the padding
          (150, 9, 5, 3, 1, 1), (250, 6, 4, 3, 2, 1)]  # 3x3 over 3 and 4 words: the unrolled micro-kernels


def _case(cin, cout, size, k, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, size, size + 1, generator=g)
    x[x.abs() < 0.05] = 0.0  # exact zeros: sign(0) must be +1
    codes = torch.where(torch.rand(cout, cin, k, k, generator=g) < 0.5, -1, 1).to(torch.int8)
    return x, codes, torch.rand(cout, generator=g) + 0.1, torch.randn(cout, generator=g)


@pytest.fixture(params=build.ISA_NAMES)
def isa(request):
    if build.native_library() is None:
        pytest.skip("no C compiler")
    if request.param not in build.available_isas():
        pytest.skip(f"this CPU has no {request.param}")
    with build.use_isa(request.param):
        yield request.param


DOREFA2 = [i / 3 for i in range(4)]  # float32 of i / n: evenly spaced up to rounding
DOREFA3 = [i / 7 for i in range(8)]
# (levels, encoding): sign, thermometer planes, binary-weighted planes (the bits of the level index)
ENCODINGS = [(None, "sign"), ([0.0, 1.0], "thermometer"), ([0.0, 0.5, 1.0, 1.5], "thermometer"),
             ([0.0, 0.45, 1.1, 2.3], "thermometer"), ([0.0, 0.5, 1.0, 1.5], "binary"), (DOREFA2, "binary"),
             (DOREFA3, "binary")]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("levels, encoding", ENCODINGS, ids=lambda v: v if isinstance(v, str) else None)
def test_native_conv_is_bit_identical_to_the_reference(shape, levels, encoding, isa):
    cin, cout, size, k, stride, pad = shape
    x, codes, scale, bias = _case(cin, cout, size, k)
    binary = encoding == "binary"
    if binary:
        thresholds, steps, picked = level_encoding(levels)
        assert picked and steps.numel() == len(levels).bit_length() - 1
    else:
        thresholds, steps = plane_encoding(levels) if levels else (None, None)
    if levels:  # the layer's input is already quantized to the levels
        x = torch.tensor(levels)[torch.randint(len(levels), x.shape)]
    bits, pops = pack_weight_codes(codes)
    got = binary_conv2d(x, bits, pops, cin, scale, bias, (stride, stride), (pad, pad), thresholds, steps, threads=2,
                        binary=binary)
    want = reference_binary_conv2d(x, codes, scale, bias, (stride, stride), (pad, pad), thresholds, steps, binary)
    assert got.shape == want.shape
    assert torch.equal(got, want)


# the fast kernel folds its byte counters every 31 words and sums binary-weighted planes
# by Horner's rule: rows of 27 and of 36 words (3x3 over 131 and 200 channels), with
# some all-ones rows against all -1 weights (8 counts per byte and word: 36 words would
# overflow a byte counter that was not folded)
@needs_native
@pytest.mark.parametrize("shape", [(131, 7, 6, 3, 2, 0), (200, 9, 5, 3, 1, 1)])
@pytest.mark.parametrize("levels, encoding", [ENCODINGS[0], ENCODINGS[3], ENCODINGS[5], ENCODINGS[6]],
                         ids=["sign", "thermometer", "binary2", "binary3"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_and_portable_kernels_match_the_reference_on_1_and_2_threads(shape, levels, encoding, threads):
    cin, cout, size, k, stride, pad = shape
    x, codes, scale, bias = _case(cin, cout, size, k, seed=3)
    binary = encoding == "binary"
    if binary:
        thresholds, steps, _ = level_encoding(levels)
    else:
        thresholds, steps = plane_encoding(levels) if levels else (None, None)
    if levels:
        x = torch.tensor(levels)[torch.randint(len(levels), x.shape)]
    x[:, :, :3] = -1.0 if levels is None else levels[-1]  # every bit set in every plane: whole windows
    codes[:8] = -1
    bits, pops = pack_weight_codes(codes)
    want = reference_binary_conv2d(x, codes, scale, bias, (stride, stride), (pad, pad), thresholds, steps, binary)
    for name in build.available_isas():  # every path this CPU has
        with build.use_isa(name):
            got = binary_conv2d(x, bits, pops, cin, scale, bias, (stride, stride), (pad, pad), thresholds, steps,
                                threads=threads, binary=binary)
        assert torch.equal(got, want), name


@needs_native
@pytest.mark.parametrize("levels", [DOREFA2, DOREFA3])
def test_binary_weighted_planes_hold_the_level_index(levels, isa):
    x = torch.randn(2, 130, 9, 7)
    thresholds, _, _ = level_encoding(levels)
    x[0, :3, 0, :len(thresholds)] = thresholds  # exact ties go up
    x[1, 5, 2, 2] = float("nan")  # reaches no threshold: level 0
    packed = pack_quantized(x, thresholds, "ge", binary=True)
    assert packed.shape == (2, len(levels).bit_length() - 1, 9, 7, 3)
    index = (x[:, None] >= thresholds.view(1, -1, 1, 1, 1)).sum(1)  # [N, C, H, W]
    planes = torch.stack([(index >> j) & 1 for j in range(packed.shape[1])], 1).bool()
    assert torch.equal(packed, _pack_bool_reference(planes.permute(0, 1, 3, 4, 2)))


@needs_native
def test_thread_count_does_not_change_results():
    x, codes, scale, bias = _case(96, 40, 12, 3, batch=3)
    bits, pops = pack_weight_codes(codes)
    runs = [binary_conv2d(x, bits, pops, 96, scale, bias, (1, 1), (1, 1), threads=t) for t in (1, 2, 3)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


@needs_native
def test_one_kernel_follows_changes_of_input_kind_shape_and_threads():
    """The descriptor is refilled only when the input's shape or kind changes: every call still matches."""
    x, codes, scale, bias = _case(70, 12, 7, 3, batch=2)
    layer = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, [-1.0, 1.0])
    kernel = layer.kernel()
    small = x[:1, :, :5, :4]
    want = {id(t): reference_binary_conv2d(t, codes, scale, bias, (1, 1), (1, 1)) for t in (x, small)}
    for t, packed, threads in [(x, False, 1), (x, True, 2), (small, True, 1), (small, False, 3), (x, False, 2)]:
        got = kernel(pack_activation_signs(t) if packed else t, threads)
        assert torch.equal(got, want[id(t)])


@needs_native
def test_concurrent_callers_share_the_thread_pool_safely():
    from concurrent.futures import ThreadPoolExecutor

    cases = [_case(96, 40, 12, 3, batch=2, seed=s) for s in range(4)]
    packed = [pack_weight_codes(codes) for _, codes, _, _ in cases]

    def run(i):
        x, _, scale, bias = cases[i]
        bits, pops = packed[i]
        return [binary_conv2d(x, bits, pops, 96, scale, bias, (1, 1), (1, 1), threads=2) for _ in range(5)]

    want = [run(i)[0] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    assert all(torch.equal(got, want[i]) for i, runs in enumerate(results) for got in runs)


@needs_native
def test_packing_matches_the_reference_packer():
    x = torch.randn(2, 70, 5, 3)
    x[0, 0, 0, 0] = 0.0
    assert torch.equal(pack_activation_signs(x), _pack_bool_reference((x < 0).permute(0, 2, 3, 1)))
    thresholds = torch.tensor([-0.5, 0.0, 0.7])
    want = _pack_bool_reference((x[:, None] >= thresholds.view(1, -1, 1, 1, 1)).permute(0, 1, 3, 4, 2))
    assert torch.equal(pack_planes(x, thresholds), want)
    codes = torch.where(torch.rand(4, 70, 3, 3) < 0.5, -1, 1).to(torch.int8)
    bits, pops = pack_weight_codes(codes)
    assert torch.equal(bits, _pack_bool_reference((codes < 0).permute(0, 2, 3, 1)))
    assert torch.equal(pops, (codes < 0).sum(1).reshape(4, 9).to(torch.int32))


@needs_native
@pytest.mark.parametrize("compare", sorted(COMPARE))
def test_every_comparison_packs_like_torch(compare, isa):
    x = torch.randn(2, 130, 9, 7)
    thresholds = torch.tensor([-0.5, 0.0, 0.7])
    x[0, :3, 0, :3] = thresholds  # exact ties
    x[1, 5, 2, 2] = float("nan")
    mask = _TORCH_COMPARE[compare](x[:, None], thresholds.view(1, -1, 1, 1, 1))
    assert torch.equal(pack_quantized(x, thresholds, compare), _pack_bool_reference(mask.permute(0, 1, 3, 4, 2)))


def test_packed_layer_memory_and_unpacking():
    x, codes, scale, bias = _case(256, 32, 6, 3)
    layer = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, [-1.0, 1.0])
    assert torch.equal(layer.codes(), codes)
    assert layer.weight_bits.numel() * 8 == 32 * 3 * 3 * 256 // 8  # exactly 1 bit per weight
    assert 4 * codes.numel() / layer.packed_bytes() > 30
    linear = PackedBinaryLinear.from_codes(codes[:, :, 0, 0], scale, bias, [0.0, 1.0, 2.0])
    inputs = torch.randint(0, 3, (4, 256)).float()
    want = reference_binary_conv2d(inputs[:, :, None, None], codes[:, :, :1, :1], scale, bias,
                                   thresholds=torch.tensor([0.5, 1.5]), steps=torch.tensor([1.0, 1.0])).flatten(1)
    assert torch.equal(linear(inputs), want)


@needs_native  # without a compiler both runs would take the reference path: nothing to compare
def test_fallback_without_a_compiler_warns_once_and_matches(monkeypatch):
    x, codes, scale, bias = _case(70, 12, 7, 3)
    layer = PackedBinaryConv2d.from_codes(codes, scale, bias, 1, 1, [-1.0, 1.0])
    native = layer(x)
    monkeypatch.setattr(build, "_compiler", lambda: None)
    build.native_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert build.native_library() is None
        assert build.isa() == "reference"
        assert torch.equal(layer(x), native)
    finally:
        build.native_library.cache_clear()


def test_binary_weighted_planes_are_picked_only_for_evenly_spaced_zero_anchored_levels():
    assert binary_step(DOREFA2) == pytest.approx(1 / 3) and encoded_planes(DOREFA2) == 2
    assert encoded_planes(DOREFA3) == 3 and encoded_planes([i / 15 for i in range(16)]) == 4
    for levels in ([0.0, 1.0], [-1.0, 1.0], [0.0, 0.3177, 1.0001, 1.8936], [0.0, 0.32, 1.085, 1.85],
                   [0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0001]):
        assert binary_step(levels) is None
    assert encoded_planes([0.0, 0.3177, 1.0001, 1.8936]) == 3  # thermometer
    _, steps, binary = level_encoding([0.0, 0.5, 1.0, 1.5])
    assert binary and steps.tolist() == [0.5, 1.0]


def test_plane_encoding_rejects_unsupported_levels():
    assert plane_encoding([-1, 1]) == (None, None)
    thresholds, steps = plane_encoding([0.0, 0.5, 1.5])
    assert thresholds.tolist() == [0.25, 1.0] and steps.tolist() == [0.5, 1.0]
    with pytest.raises(ValueError):
        plane_encoding([-1.0, 0.0, 1.0])
