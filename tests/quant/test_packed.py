import pytest
import torch

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.quant import FrozenConv2d, FrozenLinear, QuantConfig, freeze, quantize
from torchslim.export.frozen import load_frozen, frozen_size, save_frozen
from torchslim.quant.packed import fold_frozen_batchnorm


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
    exact = save_frozen(frozen, tmp_path / "exact.packed", fold_bn=False)
    assert torch.equal(load_frozen(tmp_path / "exact.packed")(x), frozen(x))
    folded_size = save_frozen(frozen, tmp_path / "folded.packed")
    assert folded_size < exact
    loaded = load_frozen(tmp_path / "folded.packed")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.features[3:])
    assert torch.allclose(loaded(x), fold_frozen_batchnorm(frozen)(x))
    torchslim.save(frozen, tmp_path / "frozen.safetensors")
    assert exact < (tmp_path / "frozen.safetensors").stat().st_size / 2  # int8 codes vs 1-2 bit codes


def test_fold_batchnorm_matches_conv_then_bn():
    frozen = _frozen("bwn")
    folded = fold_frozen_batchnorm(frozen)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(folded(x), frozen(x), rtol=1e-4, atol=1e-5)
    assert isinstance(folded.features[4], FrozenConv2d) and folded.features[4].bias is not None


def test_packing_a_float_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="freeze"):
        save_frozen(models.create("vgg11", width_mult=0.125), tmp_path / "x.packed")
    assert not (tmp_path / "x.packed").exists()


def test_side_data_dtypes_trade_bytes_for_bounded_error(tmp_path):
    frozen = fold_frozen_batchnorm(_frozen("hwgq-bwn"))
    sizes, loaded = {}, {}
    for side in ("float32", "float16", "int8"):
        sizes[side] = save_frozen(frozen, tmp_path / side, side_dtype=side)
        loaded[side] = load_frozen(tmp_path / side)
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


def test_files_of_the_earlier_layout_are_refused_with_a_way_out(tmp_path):
    """The quantization-only layout (a ``packed`` record in the torchslim header) is no longer read."""
    import json

    from safetensors.torch import save as st_save

    from torchslim.io.serialize import HEADER_KEY, _state_tensors, build_header

    frozen = _frozen("twn")
    header = {**build_header(frozen), "packed": {"layout": 2, "layers": {}}}
    (tmp_path / "old.packed").write_bytes(st_save(_state_tensors(frozen.state_dict()), metadata={HEADER_KEY: json.dumps(header)}))
    with pytest.raises(UserError, match="earlier quantization-only packed layout"):
        load_frozen(tmp_path / "old.packed")


def test_the_packed_file_is_the_export_container(tmp_path):
    """One format: what quantization writes, ``torchslim.load`` reads back as the folded frozen model."""
    from torchslim.export import is_packed

    frozen = _frozen("hwgq-bwn")
    size = save_frozen(frozen, tmp_path / "q.packed", top1=0.5)
    assert is_packed(tmp_path / "q.packed") and size == (tmp_path / "q.packed").stat().st_size
    assert size == frozen_size(frozen, top1=0.5)
    loaded, folded = torchslim.load(tmp_path / "q.packed"), fold_frozen_batchnorm(frozen)
    assert loaded.torchslim_meta["top1"] == 0.5
    binary = [name for name, m in frozen.named_modules() if isinstance(m, (FrozenConv2d, FrozenLinear))]
    assert binary and all(torch.equal(loaded.get_submodule(n).codes, frozen.get_submodule(n).codes) for n in binary)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), folded(x))  # float32 side data: the same numbers as the in-memory fold
    assert torch.allclose(loaded(x), frozen(x), rtol=1e-4, atol=1e-4)  # folding moves only the rounding


def test_a_damaged_packed_file_is_refused(tmp_path):
    frozen = _frozen("bwn")
    save_frozen(frozen, tmp_path / "q.packed")
    data = bytearray((tmp_path / "q.packed").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.packed").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        load_frozen(tmp_path / "bad.packed")
