import pytest
import torch
from torch import nn

import torchslim
from torchslim.deploy import PackedBinaryConv2d, build, compile
from torchslim.deploy.fuse import _level_index, fold_input_thresholds, fold_thresholds
from torchslim.quant.modules import ActQuant


def _packed_layer(cin, cout, levels, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.where(torch.rand(cout, cin, 3, 3, generator=g) < 0.5, -1, 1).to(torch.int8)
    scale = torch.rand(cout, generator=g) + 0.05
    scale[0] = -scale[0]  # a negative scale flips the direction of the thresholds
    return PackedBinaryConv2d.from_codes(codes, scale, torch.randn(cout, generator=g), 1, 1, levels)


def _odd_batchnorm(channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels).eval()
    bn.running_mean.normal_(0, 3, generator=g)
    bn.running_var.uniform_(0.01, 4.0, generator=g)
    bn.weight.data.normal_(0, 1, generator=g)
    bn.weight.data[0] = 0.5  # with the negative scale of channel 0: a falling channel
    bn.weight.data[1] = 0.0  # a constant channel
    bn.bias.data.normal_(0, 1, generator=g)
    return bn


def _levels(name):
    return {"sign": [-1.0, 1.0], "dorefa2": [float(v) for v in ActQuant("dorefa", 2).levels]}[name]


@pytest.mark.parametrize("method, bits", [("sign", 1), ("hwgq", 2), ("dorefa", 2), ("dorefa", 3)])
@pytest.mark.parametrize("layer_levels", ["sign", "dorefa2"])
def test_thresholds_reproduce_every_level_decision(method, bits, layer_levels):
    layer = _packed_layer(5, 12, _levels(layer_levels))
    bn, act = _odd_batchnorm(12), ActQuant(method, bits).eval()
    thresholds, sgn = fold_thresholds(layer, bn, act)
    top = 1 if layer.steps is None else 3  # largest level index of the input
    bound = 5 * 9 * top
    values = torch.arange(-bound, bound + 1, dtype=torch.float32).repeat(12, 1)  # every reachable integer sum
    if layer.binary:  # the layer's value is D * S
        assert layer.steps.numel() == 2
        values = layer.steps[0] * values
    levels = _level_index(values, layer.scale, layer.bias, bn, act)
    for k in range(thresholds.shape[0]):
        predicted = values * sgn.view(-1, 1) >= thresholds[k].view(-1, 1)
        assert torch.equal(predicted, levels >= k + 1)
    assert sgn[0] == -1.0  # negative scale, positive gamma
    assert (sgn == 1.0).any()
    assert torch.isinf(thresholds[:, 1]).all()  # gamma 0: the level never changes


def _equal_on_every_path(compiled, x, want, monkeypatch):
    """compiled(x) == want bit for bit on the fast kernels, the portable ones and the PyTorch fallback."""
    assert torch.equal(compiled(x), want)
    if build.native_library() is not None:
        lib = build.native_library()
        lib.bk_select_isa(0)
        try:
            assert torch.equal(compiled(x), want)
        finally:
            lib.bk_select_isa(-1)
    monkeypatch.setattr(build, "native_library", lambda: None)
    monkeypatch.setattr(torchslim.deploy.modules, "native_library", lambda: None)
    assert torch.equal(compiled(x), want)  # the PyTorch fallback follows the same chain


class _Chain(nn.Module):
    """Packed conv -> BN -> ActQuant -> max pool -> packed conv, on an odd-sized image."""

    def __init__(self, first_levels, method, bits):
        super().__init__()
        self.act_in = ActQuant(*{"sign": ("sign", 1), "hwgq2": ("hwgq", 2), "dorefa2": ("dorefa", 2)}[first_levels])
        first_levels = [float(v) for v in self.act_in.levels]
        self.conv1 = _packed_layer(70, 66, first_levels, seed=1)
        self.bn = _odd_batchnorm(66, seed=2)
        self.act = ActQuant(method, bits)
        self.pool = nn.MaxPool2d(2)
        levels = [float(v) for v in self.act.levels]
        self.conv2 = _packed_layer(66, 9, levels, seed=3)
        self.bn2, self.act2, self.pool2 = _odd_batchnorm(9, seed=4), ActQuant(method, bits), nn.MaxPool2d(2)

    def forward(self, x):
        x = self.conv2(self.pool(self.act(self.bn(self.conv1(self.act_in(x))))))
        return self.pool2(self.act2(self.bn2(x))).flatten(1)  # ends in floats: conv2 emits the levels


@pytest.mark.parametrize("first", ["sign", "hwgq2", "dorefa2"])
@pytest.mark.parametrize("method, bits", [("sign", 1), ("hwgq", 2), ("dorefa", 2), ("dorefa", 3)])
def test_chained_layers_match_the_float_chain(first, method, bits, monkeypatch):
    model = _Chain(first, method, bits).eval()
    compiled = compile(model)
    assert compiled.conv1.binary == (first == "dorefa2") and compiled.conv2.binary == (method == "dorefa")
    assert compiled.torchslim_meta["chained_layers"] == ["conv1", "conv2"]
    assert compiled.conv1.out_levels is not None and compiled.conv1.out_pool == 2 and compiled.conv2.packed_input
    assert compiled.conv2.out_values and not compiled.conv1.out_values
    assert isinstance(compiled.bn, nn.Identity) and isinstance(compiled.pool, nn.Identity)
    assert compiled.torchslim_meta["folded_quantizers"] == ["act_in"]  # packing quantizes the float input
    assert isinstance(compiled.act_in, nn.Identity) and compiled.conv1.in_compare is not None
    x = torch.randn(2, 70, 13, 9)
    ties = model.act_in.thresholds
    x.view(-1)[: 5 * ties.numel()] = ties.repeat(5)  # inputs exactly on a threshold follow the tie rule
    with torch.no_grad():
        _equal_on_every_path(compiled, x, model(x), monkeypatch)


def test_activation_with_another_user_gets_float_levels_not_packed_bits():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.act_in = ActQuant("sign", 1)
            self.conv1 = _packed_layer(8, 8, [-1.0, 1.0])
            self.act = ActQuant("sign", 1)
            self.conv2 = _packed_layer(8, 8, [-1.0, 1.0])

        def forward(self, x):
            a = self.act(self.conv1(self.act_in(x)))
            return self.conv2(a) + a

    model = Branch().eval()
    compiled = compile(model)
    assert compiled.torchslim_meta["chained_layers"] == ["conv1"]
    assert compiled.conv1.out_values and not compiled.conv2.packed_input
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


@pytest.mark.parametrize("method", ["xnor", "hwgq-bwn", "dorefa"])
def test_chained_model_round_trips_through_save(method, tmp_path):
    from torchslim import models
    from torchslim.quant import QuantConfig, freeze, quantize

    torch.manual_seed(0)
    frozen = freeze(quantize(models.create("vgg11", width_mult=0.25), QuantConfig(method=method)).eval())
    compiled = compile(frozen)
    assert len(compiled.torchslim_meta["chained_layers"]) == 7  # the last emits quantized floats
    torchslim.save(compiled, tmp_path / "c.safetensors")
    loaded = torchslim.load(tmp_path / "c.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), compiled(x))
        assert torch.equal(compiled(x), compile(frozen, chain=False)(x))
        if method == "xnor":  # +-1 sums are exact in the float model too
            assert torch.equal(compiled(x), frozen(x))


def _edges(thresholds, sgn):
    """Per channel, every threshold and its two float32 neighbours, as inputs x (sgn * x hits them)."""
    t = torch.where(torch.isfinite(thresholds), thresholds, 0.0)  # [Q, C]
    near = torch.cat([t, torch.nextafter(t, torch.tensor(float("inf"))), torch.nextafter(t, torch.tensor(-float("inf")))])
    return near * sgn.view(1, -1)  # [3Q, C]


@pytest.mark.parametrize("method, bits", [("sign", 1), ("hwgq", 2), ("dorefa", 2), ("dorefa", 3)])
def test_input_thresholds_reproduce_batchnorm_and_quantizer(method, bits):
    bn, act = _odd_batchnorm(12, seed=5), ActQuant(method, bits).eval()
    thresholds, sgn = fold_input_thresholds(bn, act, 12)
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(12, 4000, generator=g) * 5, _edges(thresholds, sgn).t()], 1)
    levels = _level_index(values, torch.ones(12), None, bn, act)
    for k in range(thresholds.shape[0]):
        predicted = values * sgn.view(-1, 1) >= thresholds[k].view(-1, 1)
        assert torch.equal(predicted, levels >= k + 1)
    assert torch.isinf(thresholds[:, 1]).all()  # gamma 0: the level never changes


class _FloatFirst(nn.Module):
    """Float conv -> BN -> ActQuant -> packed conv: the usual first binary layer."""

    def __init__(self, method, bits):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 67, 3, padding=1)
        self.bn = _odd_batchnorm(67, seed=6)
        self.act = ActQuant(method, bits)
        self.conv1 = _packed_layer(67, 10, [float(v) for v in self.act.levels], seed=7)

    def forward(self, x):
        return self.conv1(self.act(self.bn(self.conv0(x))))


@pytest.mark.parametrize("method, bits", [("sign", 1), ("hwgq", 2), ("dorefa", 2), ("dorefa", 3)])
def test_batchnorm_before_the_first_packed_layer_folds_into_its_packing(method, bits, monkeypatch):
    torch.manual_seed(1)
    model = _FloatFirst(method, bits).eval()
    compiled = compile(model)
    assert compiled.torchslim_meta["folded_quantizers"] == ["bn", "act"]
    assert isinstance(compiled.bn, nn.Identity) and isinstance(compiled.act, nn.Identity)
    assert compiled.conv1.in_thresholds.shape[1] == 67 and compiled.conv1.in_sgn is not None
    x = torch.randn(2, 3, 11, 9)
    with torch.no_grad():  # conv0 outputs set on the thresholds and their neighbours, channel by channel
        edges = _edges(*fold_input_thresholds(model.bn, model.act, 67))
        assert edges.shape[0] == 3 * (len(model.act.levels) - 1)
        conv0_out = model.conv0(x)
        flat = conv0_out.view(2, 67, -1)
        flat[0, :, : edges.shape[0]] = edges.t()
        want = model.conv1(model.act(model.bn(conv0_out)))
        compiled.conv0 = nn.Identity()  # feed the prepared conv0 output straight in
        _equal_on_every_path(compiled, conv0_out, want, monkeypatch)
