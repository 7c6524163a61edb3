import pytest
import torch
from torch import nn

from torchslim.codebook import PQConfig, product_quantize
from torchslim.deploy.lut import SMALL_BATCH, PQLookupConv2d, PQLookupLinear, use_lookup_tables
from torchslim.codebook.modules import PQConv2d, PQLinear


def _fill_random(layer, integer: bool, seed: int):
    """Random codebooks (small integers with ``integer``: sums of them are exact), codes and bias."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        values = torch.randint(-8, 9, layer.codebooks.shape, generator=generator).float() if integer else \
            torch.randn(layer.codebooks.shape, generator=generator)
        layer.codebooks.copy_(values)
        layer.codes.copy_(torch.randint(layer.codewords, layer.codes.shape, generator=generator))
        if layer.bias is not None:
            layer.bias.copy_(torch.randint(-4, 5, layer.bias.shape, generator=generator).float())
    return layer


def _random_pq(in_features=24, out_features=10, subvector=4, codewords=8, integer=False, bias=True):
    layer = PQLinear(in_features, out_features, bias=bias, subvector=subvector, codewords=codewords).eval()
    return _fill_random(layer, integer, seed=0)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_lookup_tables_are_exact_where_the_sums_are(bias, native):
    layer = _random_pq(integer=True, bias=bias)  # small integers: every sum is exact in float32
    lookup = PQLookupLinear(layer)
    lookup.native = native  # False: the PyTorch paths (torch.take up to SMALL_BATCH inputs, embedding_bag above)
    for batch in (1, 3, 9):
        x = torch.randint(-5, 6, (batch, 2, 24)).float()
        with torch.no_grad():
            assert torch.equal(lookup(x), layer(x))


def test_lookup_tables_match_the_decoded_layer_on_real_values():
    layer = _random_pq(in_features=64, out_features=48, subvector=4, codewords=16)
    x = torch.randn(7, 64)
    reference = x.double() @ layer.weight.detach().double().t() + layer.bias.detach().double()
    with torch.no_grad():
        out = PQLookupLinear(layer)(x)
    assert (out.double() - reference).abs().max() < 1e-4 * reference.abs().max()


def test_swapping_keeps_the_network_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 40)).eval()
    quantized = product_quantize(model, PQConfig(subvector=4, bits=3))
    assert [type(m) for m in quantized] == [nn.Flatten, PQLinear, nn.ReLU, PQLinear]
    x = torch.randn(5, 2, 16)
    with torch.no_grad():
        before = quantized(x)
        assert use_lookup_tables(quantized) == ["1", "3"]
        assert torch.allclose(quantized(x), before, atol=1e-5)
    assert isinstance(quantized[1], PQLookupLinear)


def _native_library():
    from torchslim.deploy.build import native_library

    lib = native_library()
    if lib is None:
        pytest.skip("no C compiler: the native kernels are not built")
    return lib


def _on_every_path(lib, module, x, thread_counts) -> list:
    """``module(x)`` on the AVX2 build, then the portable one, at each thread count."""
    outputs = []
    threads = torch.get_num_threads()
    try:
        for force in (-1, 0):
            lib.bk_select_isa(force)
            for n in thread_counts:
                torch.set_num_threads(n)
                with torch.no_grad():
                    outputs.append(module(x))
    finally:
        lib.bk_select_isa(-1)
        torch.set_num_threads(threads)
    return outputs


@pytest.mark.parametrize("in_features, out_features, subvector, codewords, bias", [
    (24, 10, 4, 8, True), (64, 1100, 8, 256, True), (36, 13, 3, 3, False), (512, 300, 4, 64, True)])
def test_native_lookup_kernel_is_the_same_on_both_isas_and_thread_counts(in_features, out_features, subvector,
                                                                         codewords, bias):
    lib = _native_library()
    layer = _random_pq(in_features, out_features, subvector, codewords, bias=bias)
    lookup = PQLookupLinear(layer)
    x = torch.randn(11, in_features, generator=torch.Generator().manual_seed(1))  # 8 + 3 inputs on the batched path
    reference = x.double() @ layer.weight.detach().double().t()
    if bias:
        reference += layer.bias.detach().double()
    outputs = _on_every_path(lib, lookup, x, (1, 2))  # AVX2 gathers, then the portable loops
    assert lookup._prepared  # the native kernel ran
    for out in outputs[1:]:  # the same additions in the same order on every path
        assert torch.equal(out, outputs[0])
    assert (outputs[0].double() - reference).abs().max() < 1e-5 * reference.abs().max()
    lookup.native = False  # the PyTorch path agrees up to the order of its additions
    with torch.no_grad():
        assert torch.allclose(lookup(x), outputs[0], rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def test_batched_and_single_input_kernels_give_the_same_outputs():
    _native_library()
    layer = _random_pq(in_features=96, out_features=700, subvector=8, codewords=200)
    lookup = PQLookupLinear(layer)
    x = torch.randn(SMALL_BATCH + 6, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched = lookup(x)
        one_by_one = torch.cat([lookup(row[None]) for row in x])
    assert lookup._prepared and torch.equal(batched, one_by_one)


def test_inputs_that_need_a_gradient_take_the_pytorch_path():
    _native_library()
    lookup = PQLookupLinear(_random_pq())
    x = torch.randn(2, 24, requires_grad=True)
    out = lookup(x)
    out.sum().backward()  # the native kernel has no backward; this path does
    assert out.requires_grad and x.grad is not None and x.grad.shape == x.shape


def test_more_than_256_codewords_fall_back_to_pytorch():
    layer = _random_pq(in_features=8, out_features=6, subvector=2, codewords=300)
    lookup = PQLookupLinear(layer)
    assert not lookup.native
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(lookup(x), layer(x), atol=1e-5)


def test_a_cast_layer_leaves_the_native_kernel_and_comes_back():
    _native_library()
    layer = _random_pq(integer=True)
    lookup = PQLookupLinear(layer)
    x = torch.randint(-5, 6, (2, 24)).float()
    with torch.no_grad():
        before = lookup(x)  # native, buffers prepared
        assert lookup._prepared
        assert torch.equal(lookup.double()(x.double()), before.double())  # float64: the PyTorch path
        assert lookup._prepared is None  # the cast dropped the pointers of the old buffers
        assert torch.equal(lookup.float()(x), before) and lookup._prepared  # float32 again: native


def _random_pq_conv(in_channels=8, out_channels=5, kernel=3, padding=1, stride=1, subvector=4, codewords=8,
                    integer=False, bias=True):
    layer = PQConv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias,
                     subvector=subvector, codewords=codewords).eval()
    return _fill_random(layer, integer, seed=3)


# (in, out, kernel, padding, subvector, codewords, input H x W): odd widths that leave part of the last
# 8-output block in the padding, a 5x5 and a 1x1 kernel, no padding, padding wider than the kernel's reach
CONV_CASES = [(8, 5, 3, 1, 4, 8, (7, 7)), (12, 7, 3, 0, 3, 5, (9, 11)), (16, 3, 5, 2, 4, 16, (6, 13)),
              (16, 9, 1, 0, 2, 4, (5, 5)), (6, 4, 3, 3, 2, 3, (2, 3)), (32, 20, 3, 1, 8, 256, (33, 30))]


@pytest.mark.parametrize("in_c, out_c, kernel, padding, subvector, codewords, size", CONV_CASES)
def test_conv_lookup_tables_are_exact_where_the_sums_are(in_c, out_c, kernel, padding, subvector, codewords, size):
    _native_library()
    layer = _random_pq_conv(in_c, out_c, kernel, padding, subvector=subvector, codewords=codewords, integer=True)
    lookup = PQLookupConv2d(layer)
    x = torch.randint(-5, 6, (2, in_c, *size)).float()  # small integers: every sum is exact in float32
    with torch.no_grad():
        out = lookup(x)
        assert lookup._prepared  # the native kernel ran
        assert torch.equal(out, layer(x))


@pytest.mark.parametrize("in_c, out_c, kernel, padding, subvector, codewords, size", CONV_CASES)
def test_native_conv_lookup_is_the_same_on_both_isas_and_thread_counts(in_c, out_c, kernel, padding, subvector,
                                                                       codewords, size):
    lib = _native_library()
    layer = _random_pq_conv(in_c, out_c, kernel, padding, subvector=subvector, codewords=codewords)
    lookup = PQLookupConv2d(layer)
    x = torch.randn(2, in_c, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = layer.to_float().double()(x.double())
    outputs = _on_every_path(lib, lookup, x, (1, 2, 3))  # 2 and 3 threads: other bands or channel ranges per item
    for out in outputs[1:]:  # the same additions in the same order on every path
        assert torch.equal(out, outputs[0])
    assert (outputs[0].double() - reference).abs().max() < 1e-5 * reference.abs().max()


def test_conv_lookup_splits_tall_maps_into_bands_with_the_same_sums():
    _native_library()
    # 256 codewords on a 64-wide map: a subspace's table over all rows is far above the band budget
    layer = _random_pq_conv(16, 12, 3, 1, subvector=4, codewords=256, integer=True)
    x = torch.randint(-5, 6, (1, 16, 70, 64)).float()
    with torch.no_grad():
        assert torch.equal(PQLookupConv2d(layer)(x), layer(x))


def test_conv_lookup_leaves_what_the_kernel_does_not_cover_to_the_decoded_conv():
    layer = _random_pq_conv(8, 6, 3, 1, stride=2)
    lookup = PQLookupConv2d(layer)
    assert not lookup.native  # stride 2
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.equal(lookup(x), layer(x))
    grad_input = torch.randn(1, 8, 6, 6, requires_grad=True)
    stride1 = PQLookupConv2d(_random_pq_conv(8, 6, 3, 1))
    out = stride1(grad_input)  # needs a gradient: the decoded conv, which has a backward
    out.sum().backward()
    assert grad_input.grad is not None and grad_input.grad.shape == grad_input.shape


def test_swapping_a_conv_network_keeps_its_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(8 * 5 * 5, 24)).eval()
    quantized = product_quantize(model, PQConfig(subvector=4, bits=3))
    x = torch.randn(3, 4, 10, 10)
    with torch.no_grad():
        before = quantized(x)
        assert use_lookup_tables(quantized) == ["0", "2", "4", "6"]
        assert torch.allclose(quantized(x), before, atol=1e-5)
    assert [type(quantized[i]) for i in (0, 2, 4, 6)] == [PQLookupConv2d] * 3 + [PQLookupLinear]
    assert not quantized[4].native  # the stride-2 conv runs decoded
