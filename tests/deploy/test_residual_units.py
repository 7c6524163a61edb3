"""Residual units (a real shortcut, biases and PReLU around a packed binary conv) run as the conv's
native epilogue: compiled = frozen bit for bit with sign activations, on every ISA path and thread
count, for the zoo's Bi-Real nets, for units written differently, and over random shapes."""
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchslim
from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, build, compile
from torchslim.quant import QuantConfig, freeze, quantize
from torchslim.quant.packed import fold_frozen_batchnorm

pytestmark = pytest.mark.skipif(build.native_library() is None, reason="no C compiler")


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics, PReLU slopes of both signs and shifts, so every epilogue step matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=g) * 1.5 + 0.5)
                module.weight.copy_(torch.randn(module.num_features, generator=g) * 0.3 + 1)
                module.bias.copy_(torch.randn(module.num_features, generator=g) * 0.3)
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) - 0.5)
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and parameter.dim() == 4:  # the RPReLU shifts
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    return model


def _frozen(model: nn.Module, method: str = "bireal") -> nn.Module:
    return fold_frozen_batchnorm(freeze(quantize(model, QuantConfig(method=method)).eval()).eval())


def _every_path(compiled: nn.Module, x: torch.Tensor, want: torch.Tensor) -> None:
    for isa in build.available_isas():
        with build.use_isa(isa):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                try:
                    with torch.no_grad():
                        got = compiled(x)
                finally:
                    torch.set_num_threads(1)
                assert torch.equal(got, want), (isa, threads, (got - want).abs().max().item())


@pytest.mark.parametrize("name,units", [("bireal_vgg14", 12), ("bireal_resnet18", 16)])
def test_zoo_units_fuse_and_match_the_frozen_model_bit_for_bit(name, units):
    torch.manual_seed(0)
    frozen = _frozen(_randomize(models.create(name, width_mult=0.25), 1))
    compiled = compile(frozen)
    assert len(compiled.torchslim_meta["residual_units"]) == units
    assert not any(type(m).__name__ == "BiRealUnit" for m in compiled.modules())
    # one native call for the whole binary trunk: a single chain of every unit
    trunk = compiled.features if name == "bireal_vgg14" else compiled.units
    chains = [step for step in trunk._plan() if type(step) is tuple]
    assert [len(members) for _, members in chains] == [units]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = frozen(x)
    _every_path(compiled, x, want)


def test_unfolded_batchnorm_is_folded_as_the_packed_file_folds_it():
    torch.manual_seed(0)
    model = _randomize(models.create("bireal_resnet18", width_mult=0.25), 2)
    unfolded = freeze(quantize(model, QuantConfig(method="bireal")).eval()).eval()
    compiled = compile(unfolded)
    assert len(compiled.torchslim_meta["residual_units"]) == 16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = compiled(x)
        assert torch.equal(got, fold_frozen_batchnorm(unfolded)(x))
        torch.testing.assert_close(got, unfolded(x), rtol=1e-4, atol=1e-4)


def test_two_bit_units_fuse_and_agree_to_float_rounding():
    torch.manual_seed(0)
    frozen = _frozen(_randomize(models.create("bireal_vgg14", width_mult=0.25), 3), "hwgq-zero-uniform-bwn")
    compiled = compile(frozen)
    assert len(compiled.torchslim_meta["residual_units"]) == 12
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), frozen(x), rtol=1e-4, atol=1e-4)


class _Unit(nn.Module):
    """A residual unit written another way: shortcut first in the add, optional pieces, any stride."""

    def __init__(self, cin, cout, stride, bias_in, prelu, bias_out, slopes):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(cin)
        self.act = nn.Hardtanh()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.down = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.extra = cout - cin
        self.shift_in = nn.Parameter(torch.zeros(1, cout, 1, 1)) if bias_in else None
        self.prelu = nn.PReLU(slopes if slopes == 1 else cout) if prelu else None
        self.shift_out = nn.Parameter(torch.zeros(1, cout, 1, 1)) if bias_out else None

    def forward(self, x):
        shortcut = self.down(x)
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        y = torch.add(shortcut, self.bn(self.conv(self.act(self.bn_in(x)))))
        if self.shift_in is not None:
            y = y + self.shift_in
        if self.prelu is not None:
            y = self.prelu(y)
        if self.shift_out is not None:
            y = self.shift_out + y
        return y


class _Net(nn.Module):
    def __init__(self, units, pool):
        super().__init__()
        self.stem = nn.Conv2d(3, units[0].conv.in_channels, 3, padding=1)
        self.body = nn.Sequential(*[m for unit in units for m in (unit, *([nn.MaxPool2d(pool)] if pool else []))])
        self.head = nn.Linear(units[-1].conv.out_channels, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("seed", range(8))
def test_random_units_fuse_bit_exactly(seed):
    rng = random.Random(seed)
    channels = sorted(rng.choice([3, 8, 17, 64, 70]) for _ in range(3))
    units = []
    for cin, cout in zip(channels, channels[1:]):
        stride = rng.choice([1, 2])
        units.append(_Unit(cin, cout, stride, rng.random() < 0.7, rng.random() < 0.7, rng.random() < 0.7,
                           rng.choice([1, cout])))
    pool = rng.choice([None, 2, 3]) if all(u.down.__class__ is nn.Identity for u in units) else None
    torch.manual_seed(seed)
    net = _randomize(_Net(units, pool), seed)
    frozen = _frozen(net, "xnor")
    compiled = compile(frozen)
    assert len(compiled.torchslim_meta["residual_units"]) == len(units)
    size = rng.choice([8, 12, 16]) if pool != 3 else 18
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = frozen(x)
    _every_path(compiled, x, want)
    # the layers' PyTorch reference path computes the same
    with torch.no_grad():
        h = compiled.stem(x)
        for module in compiled.body:
            if isinstance(module, PackedBinaryConv2d):
                native = module(h)
                assert torch.equal(module._reference_forward(h), native)
                h = native
            else:
                h = module(h)


class _Scaled(_Unit):
    def forward(self, x):
        return super().forward(x) * 2.0


class _OtherInput(_Unit):
    def forward(self, x):
        return self.down(x).mul(1.0) + self.bn(self.conv(self.act(self.bn_in(x))))


@pytest.mark.parametrize("kind", [_Scaled, _OtherInput])
def test_units_with_other_operations_stay_as_they_are(kind):
    torch.manual_seed(0)
    net = _randomize(_Net([kind(8, 8, 1, True, True, True, 8)], None), 0)
    frozen = _frozen(net, "xnor")
    compiled = compile(frozen)
    assert compiled.torchslim_meta["residual_units"] == []
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(compiled(x), frozen(x))


def test_a_mismatched_shortcut_is_refused_at_call_time():
    torch.manual_seed(0)
    frozen = _frozen(_randomize(_Net([_Unit(8, 16, 2, True, True, True, 16)], None), 0), "xnor")
    compiled = compile(frozen)
    assert len(compiled.torchslim_meta["residual_units"]) == 1
    with pytest.raises((ValueError, RuntimeError)):
        frozen(torch.randn(1, 3, 9, 9))  # odd size: the strided conv and the average pool disagree
    with pytest.raises(ValueError, match="residual"):
        compiled(torch.randn(1, 3, 9, 9))


@pytest.mark.parametrize("name,units", [("bireal_resnet18", 16)])
def test_a_compiled_model_with_residual_units_saves_and_loads(tmp_path, name, units):
    torch.manual_seed(0)
    frozen = _frozen(_randomize(models.create(name, width_mult=0.25), 4))
    compiled = compile(frozen, exact=False)
    torchslim.save(compiled, tmp_path / "c.safetensors")
    loaded = torchslim.load(tmp_path / "c.safetensors")
    assert sum(isinstance(m, PackedBinaryConv2d) and m.has_residual for m in loaded.modules()) == units
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), compiled(x))
