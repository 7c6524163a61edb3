"""Bi-Real units: the approximate-sign gradient, RPReLU, quantize method ``bireal`` (one and two steps),
freeze / pack / compile bit-exactness, float-weight transfer and a short-training accuracy floor."""

import json

import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.data import load_dataset
from torchslim.deploy import compile as compile_binary
from torchslim.deploy.modules import PackedBinaryConv2d
from torchslim.export.frozen import load_frozen, save_frozen
from torchslim.models.bireal import BiRealUnit, LearnableBias, RPReLU, float_ops, init_from_float
from torchslim.quant import ActQuant, QuantConfig, QuantConv2d, freeze, quantize
from torchslim.quant import functions as qf
from torchslim.data import calibration_images
from torchslim.quant.altupdate import recalibrate_bn
from torchslim.quant.packed import fold_frozen_batchnorm
from torchslim.train import TrainConfig, evaluate, fit

from ..conftest import run_cli
from .conftest import frozen_round_trip

BIREAL = ["bireal_vgg14", "bireal_resnet18"]


def _model(name, width=0.125, seed=0):
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, width_mult=width)


def _randomize_float_state(model):
    """Non-trivial shifts, RPReLU and BN statistics, so the tests do not pass on zeros and ones."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LearnableBias):
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen))
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.randn(module.num_features, generator=gen))
    return model


def test_approx_sign_forward_is_sign_and_gradient_is_bireal_polynomial():
    x = torch.tensor([-2.0, -1.0, -0.75, -0.25, 0.0, 0.25, 0.5, 1.0, 3.0], requires_grad=True)
    y = qf.approx_sign(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    y.backward(torch.full_like(x, 2.0))
    # d/dx of the Bi-Real polynomial: 2 - 2|x| inside [-1, 1], 0 outside; times the incoming 2
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 3.0, 4.0, 3.0, 2.0, 0.0, 0.0]


def test_approx_sign_quantizer_trains_with_the_surrogate_and_evaluates_as_sign():
    act = ActQuant("approx_sign", 1)
    x = torch.tensor([-0.5, 0.0, 0.5, 2.0], requires_grad=True)
    act.train()(x).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 1.0, 0.0]  # the clipped STE of "sign" would give 1, 1, 1, 0
    assert act.eval()(x).tolist() == [-1.0, 1.0, 1.0, 1.0]
    assert act.levels.tolist() == [-1.0, 1.0]


def test_rprelu_is_shifted_prelu():
    layer = RPReLU(2)
    with torch.no_grad():
        layer.shift_in.bias.copy_(torch.tensor([0.5, -1.0]).view(1, 2, 1, 1))
        layer.prelu.weight.copy_(torch.tensor([0.25, 0.5]))
        layer.shift_out.bias.copy_(torch.tensor([-2.0, 3.0]).view(1, 2, 1, 1))
    x = torch.tensor([[-1.0, 1.0], [-4.0, 2.0]]).view(1, 2, 2, 1)
    # channel 0: x + 0.5 -> prelu(0.25) -> - 2; channel 1: x - 1 -> prelu(0.5) -> + 3
    expected = torch.tensor([[-0.125 - 2, 1.5 - 2], [-2.5 + 3, 1.0 + 3]]).view(1, 2, 2, 1)
    assert torch.equal(layer(x), expected)


def test_unit_adds_the_real_shortcut_with_zero_channels_and_pooling():
    unit = BiRealUnit(4, 8, stride=2).eval()
    with torch.no_grad():
        unit.conv.weight.zero_()  # the binary path contributes BN's bias alone
        unit.bn.bias.copy_(torch.arange(8.0))
        unit.rprelu.prelu.weight.fill_(1.0)  # RPReLU with slope 1 and zero shifts is the identity
    x = torch.randn(1, 4, 6, 6)
    pooled = nn.functional.avg_pool2d(x, 2)
    expected = torch.cat([pooled, torch.zeros(1, 4, 3, 3)], 1) + torch.arange(8.0).view(1, 8, 1, 1)
    assert torch.allclose(unit(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", BIREAL)
def test_bireal_quantizes_every_unit_conv_and_keeps_first_and_last_float(name):
    model = _model(name)
    qmodel = quantize(model, QuantConfig(method="bireal"))
    units = [m for m in qmodel.modules() if isinstance(m, BiRealUnit)]
    assert len(units) == (12 if "vgg" in name else 16)
    assert all(isinstance(u.conv, QuantConv2d) and u.conv.weight_quant == "bwn" for u in units)
    assert all(isinstance(u.act, ActQuant) and u.act.method == "approx_sign" for u in units)
    quantized = sum(isinstance(m, QuantConv2d) for m in qmodel.modules())
    assert quantized == len(units)  # the stem conv and the classifier stay float
    assert isinstance(qmodel.classifier if "vgg" in name else qmodel.fc, nn.Linear)
    assert not any(isinstance(m, QuantConv2d) for m in model.modules())


def test_gradients_reach_input_bn_latent_weights_and_rprelu():
    qmodel = quantize(_randomize_float_state(_model("bireal_vgg14")), QuantConfig(method="bireal")).train()
    qmodel(torch.randn(4, 3, 32, 32)).sum().backward()
    unit = qmodel.features[3]
    for param in (unit.norm.bias, unit.conv.weight, unit.rprelu.prelu.weight, unit.rprelu.shift_in.bias):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_two_step_binarizes_activations_first_then_weights():
    model = _model("bireal_vgg14")
    first = quantize(model, QuantConfig(method="bireal", weight="float"))
    assert not any(isinstance(m, QuantConv2d) for m in first.modules())
    assert sum(isinstance(m, ActQuant) for m in first.modules()) == 12
    second = quantize(first, QuantConfig(method="bireal"))
    assert sum(isinstance(m, QuantConv2d) for m in second.modules()) == 12
    assert sum(isinstance(m, ActQuant) for m in second.modules()) == 12
    for a, b in zip(first.modules(), second.modules()):  # the latent weights carry over unchanged
        if isinstance(b, QuantConv2d):
            assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("name", BIREAL)
def test_frozen_packed_and_compiled_are_bit_identical(name, tmp_path):
    qmodel = quantize(_randomize_float_state(_model(name)), QuantConfig(method="bireal"))
    x = torch.randn(3, 3, 32, 32)
    loaded = frozen_round_trip(qmodel, x, tmp_path)
    frozen = freeze(qmodel)
    save_frozen(frozen, tmp_path / "p.safetensors")
    packed = load_frozen(tmp_path / "p.safetensors")
    compiled = compile_binary(packed)
    lowered = [m for m in compiled.modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(lowered) == (12 if "vgg" in name else 16)  # every binary conv runs on the packed kernels
    with torch.no_grad():
        expected = packed(x)
        # compile folds the BN after each binary conv as the packed file does (into the fused residual unit)
        assert torch.equal(compile_binary(frozen)(x), fold_frozen_batchnorm(frozen)(x))
        assert torch.allclose(compile_binary(frozen)(x), frozen(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(compiled(x), expected)
        assert torch.allclose(expected, loaded(x), rtol=1e-5, atol=1e-5)  # packing folds BN: float rounding


def test_two_bit_activations_compile_with_the_input_bn_folded():
    """W1A2 (zero-anchored levels D * {0..3}): every unit conv is lowered and its BN + quantizer folded into
    the packing.  The conv's raw output feeds the float BN and shortcut, where the kernel's D * (integer sum)
    and the frozen conv's float sum of D * k round differently: equal up to float32 rounding, not bit for bit
    (the W1A1 units' sums of +-1 are exact, see above)."""
    qmodel = quantize(_randomize_float_state(_model("bireal_vgg14", width=0.25)),
                      QuantConfig(method="hwgq-zero-uniform-bwn", act_bits=2)).eval()
    frozen = freeze(qmodel)
    compiled = compile_binary(frozen)
    assert sum(isinstance(m, PackedBinaryConv2d) for m in compiled.modules()) == 12
    assert [n for n in compiled.torchslim_meta["folded_quantizers"] if n.endswith(".norm")] == [
        f"features.{i}.norm" for i in (1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16)]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = frozen(x), compiled(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5) and torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("name, source", [("bireal_vgg14", "vgg14"), ("bireal_resnet18", "resnet18")])
def test_init_from_float_copies_every_matching_conv_bn_and_the_classifier(name, source):
    target, float_model = _model(name, seed=0), _randomize_float_state(_model(source, seed=1))
    copied = init_from_float(target, float_model)
    assert copied == (13 if "vgg" in name else 17)
    t_convs = [m for m in target.modules() if isinstance(m, nn.Conv2d)]
    s_convs = [m for m in float_model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(t_convs, s_convs))
    t_fc, s_fc = [[m for m in x.modules() if isinstance(m, nn.Linear)][-1] for x in (target, float_model)]
    assert torch.equal(t_fc.weight, s_fc.weight)


def test_float_ops_counts_per_element_work_of_the_units():
    unit_model = nn.Sequential(BiRealUnit(4, 4))
    counts = float_ops(unit_model, (1, 4, 8, 8))
    # input BN 4*8*8 + (BN 2 + add 1 + RPReLU 4) * 4*8*8 outputs; binary MACs 4*8*8 * 4*9
    assert counts == {"float_ops": 256 + 7 * 256, "binary_macs": 256 * 36}


def test_short_training_reaches_a_floor_on_digits():
    train, test = load_dataset("digits-32", "train"), load_dataset("digits-32", "test")
    torch.manual_seed(0)
    model = models.create("bireal_vgg14", num_classes=10, in_channels=train.images.shape[1], width_mult=0.25)
    qmodel = quantize(model, QuantConfig(method="bireal"))
    config = TrainConfig(epochs=6, lr=3e-3, optimizer="adam", weight_decay=0.0, schedule="cosine", batch_size=64,
                         seed=0)
    fit(qmodel, train, config, progress=False)
    recalibrate_bn(qmodel, calibration_images(train, 512))
    frozen = freeze(qmodel)
    assert evaluate(frozen, test)["top1"] >= 0.9  # 0.969 measured


def test_cli_quantize_bireal_with_a_float_teacher(tmp_path):
    torch.manual_seed(0)
    source, teacher = tmp_path / "bireal.safetensors", tmp_path / "vgg14.safetensors"
    torchslim.save(models.create("bireal_vgg14", width_mult=0.125), source, input_shape=(3, 32, 32))
    torchslim.save(models.create("vgg14", width_mult=0.125), teacher, input_shape=(3, 32, 32))
    out = tmp_path / "q.safetensors"
    result = run_cli("quantize", source, "--method", "bireal", "--epochs", "1", "--teacher", teacher, "--data",
                     "digits-32", "--subset", "128", "--calib", "32", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["method"] == "bireal" and payload["teacher"] == str(teacher)
    assert payload["compression_ratio"] > 5
    frozen = torchslim.load(out)
    compiled = compile_binary(frozen)
    assert sum(isinstance(m, PackedBinaryConv2d) for m in compiled.modules()) == 12
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the BN after each binary conv folded as in the packed file
        assert torch.equal(compiled(x), fold_frozen_batchnorm(freeze(frozen))(x))
        assert torch.allclose(compiled(x), frozen(x), rtol=1e-5, atol=1e-5)
