import pytest
import torch
from torch import nn

from torchslim.codebook import PQConfig, product_quantize
from torchslim.codebook.lut import PQLookupLinear, use_lookup_tables
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


@pytest.mark.parametrize("bias", [True, False])
def test_lookup_tables_are_exact_where_the_sums_are(bias):
    layer = _random_pq(integer=True, bias=bias)  # small integers: every sum is exact in float32
    for batch in (1, 3, 9):  # both gathering paths (torch.take up to SMALL_BATCH inputs, embedding_bag above)
        x = torch.randint(-5, 6, (batch, 2, 24)).float()
        with torch.no_grad():
            assert torch.equal(PQLookupLinear(layer)(x), layer(x))


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
