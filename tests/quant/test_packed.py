import pytest
import torch

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.quant import FrozenConv2d, QuantConfig, freeze, quantize
from torchslim.quant.packed import fold_batchnorm, load_packed, pack_indices, save_packed, unpack_indices


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pack_unpack_round_trip(bits):
    torch.manual_seed(bits)
    values = torch.randint(0, 2 ** bits, (1001,))
    packed = pack_indices(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert torch.equal(unpack_indices(packed, bits, 1001), values)


def test_one_bit_layout_is_msb_first():
    assert pack_indices(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [0b10000001, 0b10000000]


def _frozen(method):
    torch.manual_seed(0)
    qmodel = quantize(models.create("vgg11", width_mult=0.125), QuantConfig(method=method))
    for module in qmodel.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    return freeze(qmodel.eval())


@pytest.mark.parametrize("method", ["hwgq-bwn", "twn", "dorefa"])
def test_packed_file_rebuilds_the_frozen_model(method, tmp_path):
    frozen = _frozen(method)
    x = torch.randn(3, 3, 32, 32)
    exact = save_packed(frozen, tmp_path / "exact.packed", fold_bn=False)
    assert torch.equal(load_packed(tmp_path / "exact.packed")(x), frozen(x))
    folded_size = save_packed(frozen, tmp_path / "folded.packed")
    assert folded_size < exact
    loaded = load_packed(tmp_path / "folded.packed")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.features[3:])
    assert torch.allclose(loaded(x), fold_batchnorm(frozen)(x))
    torchslim.save(frozen, tmp_path / "frozen.safetensors")
    assert exact < (tmp_path / "frozen.safetensors").stat().st_size / 2  # int8 codes vs 1-2 bit codes


def test_fold_batchnorm_matches_conv_then_bn():
    frozen = _frozen("bwn")
    folded = fold_batchnorm(frozen)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(folded(x), frozen(x), rtol=1e-4, atol=1e-5)
    assert isinstance(folded.features[4], FrozenConv2d) and folded.features[4].bias is not None


def test_packing_a_float_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="freeze"):
        save_packed(models.create("vgg11", width_mult=0.125), tmp_path / "x.packed")
    assert not (tmp_path / "x.packed").exists()


def test_side_data_dtypes_trade_bytes_for_bounded_error(tmp_path):
    frozen = fold_batchnorm(_frozen("hwgq-bwn"))
    sizes, loaded = {}, {}
    for side in ("float32", "float16", "int8"):
        sizes[side] = save_packed(frozen, tmp_path / side, side_dtype=side)
        loaded[side] = load_packed(tmp_path / side)
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    binary = [name for name, m in frozen.named_modules() if isinstance(m, FrozenConv2d)]
    first = loaded["int8"].features[0].weight
    assert first.dtype == torch.float32 and torch.equal(first, frozen.features[0].weight)  # float layers untouched
    for name in binary:
        original = frozen.get_submodule(name)
        assert torch.equal(loaded["float32"].get_submodule(name).scale, original.scale)
        assert torch.equal(loaded["int8"].get_submodule(name).codes, original.codes)
        for leaf in ("scale", "bias"):
            value, restored = getattr(original, leaf), getattr(loaded["int8"].get_submodule(name), leaf)
            step = value.abs().max() / 127
            assert (restored - value).abs().max() <= step / 2 * 1.001
            assert torch.allclose(getattr(loaded["float16"].get_submodule(name), leaf), value, rtol=1e-3, atol=1e-6)


def test_files_of_the_first_layout_still_load(tmp_path):
    """One ``codes.packed``/``codes.values`` pair per layer and a plain JSON header."""
    import json

    from safetensors.torch import save as st_save

    from torchslim.io.serialize import HEADER_KEY, _state_tensors, build_header

    frozen = fold_batchnorm(_frozen("twn"))
    tensors, records = {}, {}
    for key, value in _state_tensors(frozen).items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "codes":
            values, indices = torch.unique(value, sorted=True, return_inverse=True)
            tensors[f"{owner}.codes.values"] = values.to(torch.int8)
            tensors[f"{owner}.codes.packed"] = pack_indices(indices, 2)
            records[owner] = {"shape": list(value.shape), "bits": 2}
        else:
            tensors[key] = value
    header = {**build_header(frozen), "packed": {"layers": records, "float_dtype": "float32", "bn_folded": True}}
    (tmp_path / "v1.packed").write_bytes(st_save(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_packed(tmp_path / "v1.packed")(x), frozen(x))
