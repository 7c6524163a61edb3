import copy

import numpy as np
import pytest
import torch
from torch import nn

import torchslim
from torchslim.codebook import (SHARED_TYPES, CodebookConv2d, CodebookLinear, PQConfig, PQConv2d, PQLinear,
                                WeightShareConfig, huffman, kmeans, kmeans_1d, layer_output_errors, materialize,
                                product_quantize, weight_share)
from torchslim.codebook.kmeans import INITS
from torchslim.codebook.qcnn import qcnn_fit, unfolded_rows
from torchslim.codebook.pq import pq_weight_fit
from torchslim.sparse import SparsityConfig, sparsify
from torchslim import models

from ..sparse.helpers import digits, top1, trained_mlp


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_weight_sharing_uses_exactly_the_centroid_count(init, bits):
    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10).eval()
    with torch.no_grad():  # evenly spread distinct values: no init leaves a cluster empty
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                n = module.weight.numel()
                module.weight.copy_(torch.linspace(-1, 1, n)[torch.randperm(n)].reshape(module.weight.shape))
                assert n >= 2 ** bits and torch.unique(module.weight).numel() == n
    shared = weight_share(model, WeightShareConfig(bits=bits, init=init))
    layers = [m for m in shared.modules() if isinstance(m, (CodebookLinear, CodebookConv2d))]
    assert len(layers) == 5
    for module in layers:
        assert module.table_size == 2 ** bits
        assert torch.unique(module.weight.detach()).numel() == 2 ** bits


def test_pruned_weights_stay_exactly_zero():
    model = sparsify(trained_mlp(), SparsityConfig(sparsity=0.9))
    shared = weight_share(model, WeightShareConfig(bits=3))
    for path, module in shared.named_modules():
        if isinstance(module, CodebookLinear):
            original = model.get_submodule(path).weight
            assert module.zero_code
            assert torch.equal(module.weight.detach() == 0, original == 0)
            assert torch.unique(module.weight.detach()).numel() <= 8


def test_kmeans_1d_finds_separated_clusters():
    values = torch.cat([torch.full((50,), -2.0), torch.full((30,), 0.5), torch.full((20,), 3.0)])
    centroids, codes = kmeans_1d(values, 3, init="linear")
    assert torch.allclose(centroids, torch.tensor([-2.0, 0.5, 3.0]))
    assert torch.equal(centroids[codes], values)


def test_kmeans_codeword_count_and_quality():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 4, generator=generator) * 5
    vectors = centers.repeat(30, 1) + 0.01 * torch.randn(240, 4, generator=generator)
    centroids, codes = kmeans(vectors, 8)
    assert centroids.shape == (8, 4) and codes.max() < 8
    assert ((centroids[codes] - vectors) ** 2).mean() < 1e-3


def test_centroid_gradient_is_the_sum_over_its_cluster():
    layer = nn.Linear(6, 5)
    shared = weight_share(nn.Sequential(layer), WeightShareConfig(bits=2))[0]
    x = torch.randn(7, 6)
    shared(x).square().sum().backward()
    dense = shared.to_float()
    dense(x).square().sum().backward()
    codes = shared.codes.long()
    expected = torch.zeros(shared.num_centroids).index_add_(0, codes.reshape(-1), dense.weight.grad.reshape(-1))
    assert torch.allclose(shared.centroids.grad, expected, atol=1e-5)


def test_centroid_fine_tune_keeps_weights_tied_and_accuracy():
    from torchslim.train import TrainConfig, fit

    model = trained_mlp()
    shared = weight_share(model, WeightShareConfig(bits=3))
    before = {p: m.codes.clone() for p, m in shared.named_modules() if isinstance(m, CodebookLinear)}
    fit(shared, digits()[0], TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, batch_size=64,
                                         augment=False), progress=False)
    shared.eval()
    for path, codes in before.items():
        module = shared.get_submodule(path)
        assert torch.equal(module.codes, codes)
        assert torch.unique(module.weight.detach()).numel() <= 8
    assert top1(shared) >= top1(model) - 0.05


@pytest.mark.parametrize("cls", SHARED_TYPES)
def test_every_shared_layer_type_saves_and_loads(cls, tmp_path):
    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10).eval()
    if cls in (PQLinear, PQConv2d):
        config = PQConfig(subvector=2, bits=3, exclude=("features.0",))
        compressed = product_quantize(model, config)
    else:
        compressed = weight_share(model, WeightShareConfig(bits=4))
    assert any(type(m) is cls for m in compressed.modules())
    torchslim.save(compressed, tmp_path / "c.safetensors")
    loaded = torchslim.load(tmp_path / "c.safetensors")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), compressed(x))
    assert torch.equal(materialize(copy.deepcopy(compressed))(x), compressed(x))


def test_pq_codebook_sizes_and_skips():
    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10).eval()
    quantized = product_quantize(model, PQConfig(subvector=2, bits=3))
    assert "features.0" in quantized.torchslim_meta["pq_skipped"]  # 1 input channel
    conv = quantized.features[4]
    assert isinstance(conv, PQConv2d) and conv.codebooks.shape == (3, 8, 2)
    per_row = conv.weight.detach().permute(0, 2, 3, 1).reshape(-1, 3, 2)
    for s in range(3):  # every sub-vector is one of its subspace's 8 codewords
        assert torch.unique(per_row[:, s], dim=0).shape[0] <= 8


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_qcnn_output_error_is_at_most_pq_error(kind):
    generator = torch.Generator().manual_seed(0)
    if kind == "linear":
        layer = nn.Linear(16, 24)
        inputs = torch.randn(400, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    else:
        layer = nn.Conv2d(8, 12, 3, padding=1)
        inputs = torch.randn(20, 8, 6, 6, generator=generator).cumsum(1)  # correlated channels
    config = PQConfig(subvector=4, bits=3, qcnn_iters=4)
    rows = unfolded_rows(layer, inputs)
    weight = layer.weight.detach()

    def output_error(codebooks, codes):
        quantized = PQ_FOR[kind].from_layer(layer, codebooks, codes).weight.detach()
        dense = rows @ weight.reshape(weight.shape[0], -1).t()
        return float(((rows @ quantized.reshape(weight.shape[0], -1).t() - dense) ** 2).sum())

    pq_error = output_error(*pq_weight_fit(layer, config))
    qcnn_error = output_error(*qcnn_fit(layer, rows, rows, config))
    assert qcnn_error < 0.9 * pq_error


PQ_FOR = {"linear": PQLinear, "conv": PQConv2d}


def test_qcnn_beats_pq_inside_a_network():
    model = trained_mlp()
    train, test = digits()
    config = PQConfig(subvector=4, bits=3, calib_samples=200)
    pq = product_quantize(model, config)
    qcnn = product_quantize(model, PQConfig(subvector=4, bits=3, calib_samples=200, method="qcnn"), train)
    images = next(iter(torchslim.data.BatchLoader(test, batch_size=256)))[0]
    paths = [p for p, m in qcnn.named_modules() if isinstance(m, PQLinear)]
    pq_errors = layer_output_errors(model, pq, paths, images)
    qcnn_errors = layer_output_errors(model, qcnn, paths, images)
    assert sum(qcnn_errors.values()) < sum(pq_errors.values())


@pytest.mark.parametrize("distribution", ["skewed", "uniform", "single"])
def test_huffman_round_trip(distribution):
    rng = np.random.default_rng(0)
    symbols = {"skewed": rng.geometric(0.2, 5000).clip(0, 63) % 64, "uniform": rng.integers(0, 64, 5000),
               "single": np.full(100, 7)}[distribution]
    stream, lengths = huffman.encode(symbols, 64)
    assert np.array_equal(huffman.decode(stream.numpy(), lengths.numpy(), symbols.size).numpy(), symbols)
    if distribution == "skewed":
        assert stream.numel() < symbols.size * 6 / 8 * 0.7  # well under the fixed 6 bits


def test_layer_bits_override_the_global_bits():
    from torchslim.errors import UserError

    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10)
    shared = weight_share(model, WeightShareConfig(bits=5, conv_bits=6, layer_bits={"features.0": 2,
                                                                                   "classifier.3": 3}))
    sizes = {path: m.table_size for path, m in shared.named_modules() if hasattr(m, "codes")}
    assert sizes == {"features.0": 4, "features.4": 64, "classifier.0": 32, "classifier.3": 8, "classifier.6": 32}
    with pytest.raises(UserError, match="unknown layer to share weights in 'classifier.9'"):
        weight_share(model, WeightShareConfig(layer_bits={"classifier.9": 3}))
    with pytest.raises(UserError, match="bits of features.0 must be in 1..16"):
        WeightShareConfig(layer_bits={"features.0": 0})


def test_side_data_rounds_to_float16_and_keeps_the_codes():
    from torchslim.codebook import round_side_data
    from torchslim.errors import UserError

    shared = weight_share(trained_mlp(), WeightShareConfig(bits=4))
    before = copy.deepcopy(shared)
    round_side_data(shared, "float16")
    for new, old in zip(shared.modules(), before.modules()):
        if hasattr(new, "codes"):
            assert torch.equal(new.codes, old.codes)
            assert torch.equal(new.centroids.half().float(), new.centroids)
            assert torch.allclose(new.centroids, old.centroids, rtol=2 ** -11, atol=0)
            assert torch.allclose(new.bias, old.bias, rtol=2 ** -11, atol=1e-7)
    assert abs(top1(shared) - top1(before)) <= 0.01
    with pytest.raises(UserError, match="unknown side-data dtype"):
        round_side_data(shared, "float8")


def test_packed_header_keeps_plain_notes_and_leaves_stage_records_in_the_model_file(tmp_path):
    from torchslim.export import PackOptions, pack_model, read_packed_header, save_packed

    shared = weight_share(trained_mlp(), WeightShareConfig(bits=4))
    bare = len(pack_model(shared, PackOptions(huffman=True)))
    records = {"train": {"epochs": 6, "lr": 0.05, "schedule": "onecycle"}, "layers": ["classifier.0"],
               "compress_weights": {"method": "kmeans", "source": str(tmp_path / "stages" / "model.safetensors")}}
    shared.torchslim_meta = {"top1": 0.9047, "data": "digits", **records}
    assert save_packed(shared, tmp_path / "m.packed", PackOptions(huffman=True)) - bare < 40  # two plain notes
    assert read_packed_header(tmp_path / "m.packed")["model"]["meta"] == {"top1": 0.9047, "data": "digits"}
    torchslim.save(shared, tmp_path / "m.safetensors")
    assert torchslim.load(tmp_path / "m.safetensors").torchslim_meta == {"top1": 0.9047, "data": "digits", **records}
