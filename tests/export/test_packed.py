import json
import os

import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.codebook import PQConfig, WeightShareConfig, product_quantize, weight_share
from torchslim.errors import UserError
from torchslim.export import PACKERS, PackOptions, load_packed, packed_size, save_packed
from torchslim.export import packers as _builtin  # noqa: F401  (registers the built-in packers)
from torchslim.export.onnx import export_onnx, float32_size
from torchslim.io import read_header
from torchslim.lowrank import LowRankConfig, factorize
from torchslim.profile import profile_model
from torchslim.sparse import SparsityConfig, sparsify


def _lenet5():
    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


def _frozen(kind):
    from torchslim.quant.modules import FrozenConv2d, FrozenLinear

    model = _lenet5()
    generator = torch.Generator().manual_seed(1)
    conv = model.features[4]
    frozen_conv = FrozenConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, weight_quant="twn",
                               weight_bits=2)
    alphabet = {"sign": [-1, 1], "ternary": [-1, 0, 1], "kbit": list(range(-8, 8))}[kind]
    choices = torch.tensor(alphabet, dtype=torch.int8)
    frozen_conv.load_codes(choices[torch.randint(len(alphabet), conv.weight.shape, generator=generator)],
                           torch.rand(conv.out_channels, generator=generator))
    model.features[4] = frozen_conv
    fc = model.classifier[3]
    frozen_fc = FrozenLinear(fc.in_features, fc.out_features, weight_quant="bwn", weight_bits=1)
    frozen_fc.load_codes(torch.where(torch.rand(fc.weight.shape, generator=generator) < 0.5, -1, 1).to(torch.int8),
                         torch.rand(fc.out_features, generator=generator), fc.bias)
    model.classifier[3] = frozen_fc
    return model


# One model per registered packer (and per interesting variant); a new packer must add one here.
FACTORIES = {
    "float": _lenet5,
    "sparse": lambda: sparsify(_lenet5(), SparsityConfig(sparsity=0.9)),
    "kmeans": lambda: weight_share(_lenet5(), WeightShareConfig(bits=4)),
    "sparse-kmeans": lambda: weight_share(sparsify(_lenet5(), SparsityConfig(sparsity=0.9)), WeightShareConfig(bits=5)),
    "pq": lambda: product_quantize(_lenet5(), PQConfig(subvector=2, bits=4)),
    "lowrank": lambda: factorize(_lenet5(), LowRankConfig(method="tucker", energy=0.8), input_shape=(1, 28, 28)),
    "conv1d": None,
    "frozen-sign": lambda: _frozen("sign"),
    "frozen-ternary": lambda: _frozen("ternary"),
    "frozen-kbit": lambda: _frozen("kbit"),
}
COVERS = {  # packer name -> the factory that exercises it
    "nn.Linear": "sparse", "nn.Conv2d": "sparse", "nn.Conv1d": "conv1d",
    "torchslim.codebook.modules.CodebookLinear": "kmeans", "torchslim.codebook.modules.CodebookConv2d": "kmeans",
    "torchslim.codebook.modules.PQLinear": "pq", "torchslim.codebook.modules.PQConv2d": "pq",
    "torchslim.quant.modules.FrozenConv2d": "frozen-ternary", "torchslim.quant.modules.FrozenLinear": "frozen-sign",
}
CASES = [name for name, factory in FACTORIES.items() if factory is not None]


def test_every_registered_packer_is_covered():
    assert {packer.name for packer in PACKERS.values()} <= set(COVERS)


@pytest.mark.parametrize("huffman", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_packed_round_trip_is_exact(case, huffman, tmp_path):
    model = FACTORIES[case]().eval()
    path = tmp_path / "m.packed"
    options = PackOptions(huffman=huffman, fold_bn=False)
    size = save_packed(model, path, options)
    assert size == os.path.getsize(path) == packed_size(model, options)
    loaded = torchslim.load(path)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert read_header(path)["arch"]["name"] == "lenet5"


@pytest.mark.parametrize("case", ["frozen-sign", "frozen-ternary", "frozen-kbit"])
def test_frozen_layers_pack_with_their_batchnorm_folded_by_default(case, tmp_path):
    """BN after a frozen layer becomes its scale and bias, exactly as fold_frozen_batchnorm does."""
    from torchslim.quant.packed import fold_frozen_batchnorm

    model = FACTORIES[case]().eval()
    folded = fold_frozen_batchnorm(model)
    size = save_packed(model, tmp_path / "m.packed")
    assert size < packed_size(model, PackOptions(fold_bn=False))
    loaded, x = torchslim.load(tmp_path / "m.packed"), torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), folded(x))
    assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(loaded.features[5], nn.Identity) and loaded.features[4].bias is not None


@pytest.mark.parametrize("side", ["float16", "int8"])
def test_side_dtype_shrinks_only_the_frozen_scales(side, tmp_path):
    model = FACTORIES["frozen-ternary"]().eval()
    exact = save_packed(model, tmp_path / "exact.packed", PackOptions(fold_bn=False))
    size = save_packed(model, tmp_path / "side.packed", PackOptions(fold_bn=False, side_dtype=side))
    assert size < exact
    loaded = torchslim.load(tmp_path / "side.packed")
    layer, original = loaded.features[4], model.features[4]
    assert torch.equal(layer.codes, original.codes) and torch.equal(loaded.features[0].weight, model.features[0].weight)
    step = float(original.scale.abs().max()) / 127 if side == "int8" else float(original.scale.abs().max()) / 1024
    assert 0 < (layer.scale - original.scale).abs().max() <= step / 2 * 1.001


def test_unknown_pack_dtypes_are_user_errors():
    from torchslim.errors import UserError

    with pytest.raises(UserError, match="unknown side dtype 'int4'"):
        PackOptions(side_dtype="int4")
    with pytest.raises(UserError, match="unknown float dtype"):
        PackOptions(float_dtype="bfloat8")


def test_conv1d_packs_like_conv2d():
    from torchslim.export.registry import find_packer

    assert find_packer(nn.Conv1d(2, 3, 3)).name == "nn.Conv1d"
    layer = nn.Conv1d(4, 6, 3)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape) < 0.1)
    packer = find_packer(layer)
    tensors, meta = packer.pack(layer, PackOptions())
    assert meta["sparse"]
    assert torch.equal(packer.unpack(layer, tensors, meta)["weight"], layer.weight)


@pytest.mark.parametrize("case", ["sparse", "sparse-kmeans"])
def test_compressed_files_are_really_smaller(case):
    model = FACTORIES[case]()
    assert packed_size(model) < float32_size(model) / 3


def test_frozen_codes_take_one_or_two_bits():
    from torchslim.export.registry import find_packer

    model = _frozen("sign")
    for module, bits in ((model.classifier[3], 1), (model.features[4], 1)):
        tensors, meta = find_packer(module).pack(module, PackOptions())
        code_bytes = sum(t.numel() for k, t in tensors.items() if k.startswith("codes."))
        assert code_bytes == -(-module.codes.numel() * bits // 8)
    ternary = _frozen("ternary").features[4]
    tensors, meta = find_packer(ternary).pack(ternary, PackOptions())
    assert meta["codes"]["alphabet"] == "ternary"
    assert tensors["codes.ternary"].numel() == -(-ternary.codes.numel() * 2 // 8)


def test_file_size_falls_with_the_bits():
    model = _lenet5()
    sizes = {bits: packed_size(weight_share(model, WeightShareConfig(bits=bits))) for bits in (2, 4, 6, 8)}
    assert sizes[2] < sizes[4] < sizes[6] < sizes[8]
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    centroid_bytes = 5 * 4 * (2 ** 8 - 2 ** 4)  # five layers' codebooks grow too
    assert sizes[8] - sizes[4] == pytest.approx(weights * 4 / 8 + centroid_bytes, rel=0.02)


def _corrupt(path, how):
    data = bytearray(open(path, "rb").read())
    header_len = int.from_bytes(data[:8], "little")
    if how == "truncated":
        data = data[: len(data) - 7]
    elif how == "half":
        data = data[: len(data) // 2]
    elif how == "appended":
        data += b"\0" * 16
    elif how == "weights":
        data[8 + header_len + (len(data) - 8 - header_len) // 2] ^= 0x10
    elif how in ("header", "digest"):  # the header tensor: SHA-256 of the JSON, then the zlib-compressed JSON
        start = json.loads(data[8:8 + header_len])["header"]["data_offsets"][0]
        position = 8 + header_len + start + (40 if how == "header" else 3)
        data[position] ^= 0x04
    elif how == "empty":
        data = b""
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "half", "appended", "weights", "header", "digest", "empty"])
def test_corrupted_files_are_rejected(how, tmp_path):
    model = weight_share(_lenet5(), WeightShareConfig(bits=4))
    path = tmp_path / "m.packed"
    save_packed(model, path)
    _corrupt(path, how)
    with pytest.raises(UserError, match="corrupt|truncated|not a torchslim"):
        torchslim.load(path)
    with pytest.raises(UserError):
        load_packed(path)


def test_profile_reports_the_real_bytes(tmp_path):
    model = FACTORIES["sparse-kmeans"]()
    path = tmp_path / "m.packed"
    save_packed(model, path)
    result = profile_model(torchslim.load(path), path=str(path), batch_sizes=(1,), repeats=2, per_layer=False)
    assert result.size_bytes == os.path.getsize(path)


@pytest.mark.parametrize("case", ["kmeans", "pq", "lowrank", "frozen-ternary"])
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    model = FACTORIES[case]()
    info = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    assert info["size_bytes"] == os.path.getsize(tmp_path / "m.onnx")
    assert info["max_abs_diff"] < 1e-3


def test_batchnorm_folding_keeps_outputs_and_round_trips(tmp_path):
    from torchslim.prune.deploy import fold_batchnorm

    model = _lenet5()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(folded(x), model(x), atol=1e-4)
    torchslim.save(folded, tmp_path / "f.safetensors")
    assert torch.equal(torchslim.load(tmp_path / "f.safetensors")(x), folded(x))


@pytest.mark.parametrize("method", ["hwgq-bwn", "hwgq-zero-uniform-bwn", "dorefa"])
@pytest.mark.parametrize("frozen", [False, True])
def test_quantized_models_export_to_onnx(method, frozen, tmp_path):
    """Activation quantizers with few thresholds count them through uint8 views in eager mode;
    the exporter's tracer cannot record those, so tracing takes an int64 count instead."""
    from torchslim.quant import QuantConfig, freeze, quantize

    torch.manual_seed(0)
    bits = 3 if method == "dorefa" else 2  # 7 thresholds take the bucketize path, 3 the counting one
    model = quantize(_lenet5(), QuantConfig(method=method, act_bits=bits)).eval()
    model = freeze(model).eval() if frozen else model
    info = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    assert info["size_bytes"] == os.path.getsize(tmp_path / "m.onnx")
    assert info["max_abs_diff"] < 1e-3
