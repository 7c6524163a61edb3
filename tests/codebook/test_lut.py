import pytest
import torch
from torch import nn

from torchslim.codebook import PQConfig, product_quantize
from torchslim.codebook.lut import SMALL_BATCH, PQLookupLinear, use_lookup_tables
from torchslim.codebook.modules import PQLinear


def _random_pq(in_features=24, out_features=10, subvector=4, codewords=8, integer=False, bias=True):
    generator = torch.Generator().manual_seed(0)
    layer = PQLinear(in_features, out_features, bias=bias, subvector=subvector, codewords=codewords).eval()
    with torch.no_grad():
        values = torch.randint(-8, 9, layer.codebooks.shape, generator=generator).float() if integer else \
            torch.randn(layer.codebooks.shape, generator=generator)
        layer.codebooks.copy_(values)
        layer.codes.copy_(torch.randint(codewords, layer.codes.shape, generator=generator))
        if bias:
            layer.bias.copy_(torch.randint(-4, 5, (out_features,), generator=generator).float())
    return layer


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
    outputs = []
    threads = torch.get_num_threads()
    try:
        for force in (-1, 0):  # AVX2 gathers, then the portable loops
            lib.bk_select_isa(force)
            for n in (1, 2):
                torch.set_num_threads(n)
                with torch.no_grad():
                    outputs.append(lookup(x))
    finally:
        lib.bk_select_isa(-1)
        torch.set_num_threads(threads)
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
