"""The compressed-layer contract, checked for every registered compressed layer type.

A type is found through the saved-type registry; each must have a packer, rebuild from its
config, pack and unpack exactly, give a float layer holding exactly its weight, and, when it
has a lowering, compile to a runtime layer with the same outputs (bit for bit where exact).
"""

import copy
import inspect

import pytest
import torch
from torch import nn

import torchslim.deploy  # noqa: F401  # registers the lowerings
import torchslim.export.packers  # noqa: F401  # registers the packers
from torchslim.deploy import compile as compile_model
from torchslim.deploy.lowering import LOWERINGS, RuntimeLayer
from torchslim.export import PackOptions
from torchslim.export.registry import FLOAT_PACKER, find_packer
from torchslim.io.spec import _CUSTOM_TYPES
from torchslim.nn import CompressedLayer, float_copy, geometry_of
from torchslim.quant.modules import ActQuant

COMPRESSED = sorted((cls for cls in _CUSTOM_TYPES.values() if issubclass(cls, CompressedLayer)),
                    key=lambda cls: cls.__qualname__)


def _is_conv(cls) -> bool:
    return "in_channels" in inspect.signature(cls).parameters


def _example(cls, seed: int = 0, binary: bool = False) -> CompressedLayer:
    """An instance with random state: floats normal, signed codes in {-1, 0, 1} ({-1, 1} when
    ``binary``), unsigned codes in {0, 1} (valid for every alphabet and codebook size)."""
    geometry = dict(in_channels=8, out_channels=6, kernel_size=3, padding=1) if _is_conv(cls) else \
        dict(in_features=8, out_features=6)
    layer = cls(**geometry, bias=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in (*layer.parameters(), *layer.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            elif tensor.dtype.is_signed and binary:
                tensor.copy_(torch.randint(0, 2, tensor.shape, generator=generator) * 2 - 1)
            else:
                low = -1 if tensor.dtype.is_signed else 0
                tensor.copy_(torch.randint(low, 2, tensor.shape, generator=generator))
    return layer.eval()


def _input(layer, batch: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (batch, 8, 6, 6) if _is_conv(type(layer)) else (batch, 8)
    return torch.randn(shape, generator=generator)


def test_every_compressed_type_is_found():
    names = {cls.__name__ for cls in COMPRESSED}
    assert {"FrozenConv2d", "FrozenLinear", "CodebookConv2d", "CodebookLinear", "PQConv2d", "PQLinear"} <= names


@pytest.mark.parametrize("cls", COMPRESSED, ids=lambda cls: cls.__name__)
def test_geometry_and_config_rebuild_the_layer(cls):
    layer = _example(cls)
    assert tuple(layer.weight.shape) == layer.geometry.weight_shape
    config = layer.get_config()
    assert geometry_of(layer).config().items() <= config.items()
    rebuilt = cls(**config)
    rebuilt.load_state_dict(layer.state_dict())
    x = _input(layer)
    assert torch.equal(rebuilt.eval()(x), layer(x))


@pytest.mark.parametrize("huffman", [False, True])
@pytest.mark.parametrize("cls", COMPRESSED, ids=lambda cls: cls.__name__)
def test_packer_round_trips_exactly(cls, huffman):
    layer = _example(cls)
    packer = find_packer(layer)
    assert packer is not FLOAT_PACKER, f"{cls.__name__} has no packer"
    tensors, meta = packer.pack(layer, PackOptions(huffman=huffman, fold_bn=False))
    state = packer.unpack(layer, tensors, meta)
    expected = {k: v for k, v in layer.state_dict().items() if "." not in k}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key].to(value.dtype), value), key


@pytest.mark.parametrize("cls", COMPRESSED, ids=lambda cls: cls.__name__)
def test_to_float_holds_exactly_the_materialised_weight(cls):
    layer = _example(cls)
    dense = layer.to_float()
    assert type(dense) in (nn.Linear, nn.Conv2d) and type(dense) is type(layer.geometry.float_layer())
    assert torch.equal(dense.weight, layer.weight) and torch.equal(dense.bias, layer.bias)
    x = _input(layer)
    assert torch.allclose(dense(x), layer(x), rtol=1e-5, atol=1e-5)
    model = nn.Sequential(layer)
    copied = float_copy(model)
    assert type(copied[0]) is type(dense) and torch.equal(copied[0].weight, dense.weight)
    assert model[0] is layer  # the caller's model keeps its compressed layer


LOWERED = [cls for cls in COMPRESSED if LOWERINGS.find(cls) is not None]


@pytest.mark.parametrize("cls", LOWERED, ids=lambda cls: cls.__name__)
def test_compile_lowers_to_a_runtime_layer_with_the_same_outputs(cls):
    layer = _example(cls, binary=True)
    model = nn.Sequential(ActQuant("sign", 1), layer).eval()  # levels {-1, +1} in front, for layers that need them
    before = copy.deepcopy(model.state_dict())
    compiled = compile_model(model, chain=False)
    assert isinstance(compiled[1], RuntimeLayer) and compiled.torchslim_meta["compiled_layers"] == ["1"]
    assert model[1] is layer and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for batch in (1, 3):
        x = _input(layer, batch)
        expected, got = model(x), compiled(x)
        if LOWERINGS.find(layer).exact:
            assert torch.equal(got, expected)
        else:
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
