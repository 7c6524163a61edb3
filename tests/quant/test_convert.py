import warnings

import pytest
import torch

from torchslim import models
from torchslim.errors import UserError
from torchslim.quant import (QUANT_METHODS, ActQuant, FrozenConv2d, QuantConfig, QuantConv2d, clip_latent_weights,
                             freeze, plan_quantization, quantize)

from .conftest import frozen_round_trip


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return models.create("vgg14", width_mult=0.125).eval()


def _bn_noise(model):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize("method", sorted(QUANT_METHODS))
def test_frozen_equals_eval_and_save_load_is_bit_identical(method, vgg, tmp_path):
    qmodel = quantize(vgg, QuantConfig(method=method))
    _bn_noise(qmodel)
    qmodel.train()
    x = torch.randn(4, 3, 32, 32)
    qmodel(x).sum().backward()  # a training step's forward/backward works
    loaded = frozen_round_trip(qmodel, x, tmp_path)
    layers = [m for m in loaded.modules() if isinstance(m, FrozenConv2d)]
    assert len(layers) == 12 and all(m.codes.dtype == torch.int8 for m in layers)
    assert loaded.torchslim_meta["quant"]["frozen"] is True


def test_binary_codes_and_first_last_kept_float(vgg):
    frozen = freeze(quantize(vgg, QuantConfig(method="xnor")))
    assert type(frozen.features[0]) is torch.nn.Conv2d
    assert type(frozen.classifier) is torch.nn.Linear
    for module in frozen.modules():
        if isinstance(module, FrozenConv2d):
            assert set(module.codes.unique().tolist()) == {-1, 1}
            assert module.scale.shape == (module.out_channels,)
    ternary = freeze(quantize(vgg, QuantConfig(method="twn")))
    assert set(ternary.features[3].codes.unique().tolist()) == {-1, 0, 1}


def test_no_keep_first_last_and_overrides(vgg):
    plans = plan_quantization(vgg, QuantConfig(method="bwn", keep_first_last=False))
    assert "features.0" in [p.name for p in plans] and "classifier" in [p.name for p in plans]
    config = QuantConfig(method="hwgq-bwn", overrides={"features.3": "float", "features.5": {"act_bits": 3}})
    qmodel = quantize(vgg, config)
    assert type(qmodel.features[3]) is torch.nn.Conv2d
    assert isinstance(qmodel.features[5], ActQuant) and qmodel.features[5].bits == 3
    assert QuantConfig.from_dict(config.to_dict()) == config


def test_caller_model_untouched_and_bad_config_is_user_error(vgg):
    before = {k: v.clone() for k, v in vgg.state_dict().items()}
    quantize(vgg, QuantConfig(method="bnn"))
    with pytest.raises(UserError, match="cannot use 3 bits"):
        quantize(vgg, QuantConfig(method="bwn", weight_bits=3))
    with pytest.raises(UserError, match="unknown quantization method"):
        QuantConfig(method="binary")
    with pytest.raises(UserError, match="module name"):
        quantize(vgg, QuantConfig(overrides={"features.99": "float"}))
    assert all(torch.equal(before[k], v) for k, v in vgg.state_dict().items())
    assert all(type(m) in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.ReLU,
                           torch.nn.MaxPool2d) for m in vgg.features)


def test_hwgq_without_bn_is_an_error_and_binary_resnet_works():
    with pytest.raises(UserError, match="needs BatchNorm"):
        quantize(models.create("resnet20", width_mult=0.25), QuantConfig(method="hwgq-bwn"))
    model = models.create("binary_resnet20", width_mult=0.25).eval()
    qmodel = quantize(model, QuantConfig(method="hwgq-bwn"))
    assert sum(isinstance(m, QuantConv2d) for m in qmodel.modules()) == 18
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(freeze(qmodel)(x), qmodel.eval()(x))


def test_warnings_for_1x1_binary_convs_and_wide_activations():
    with pytest.warns(UserWarning, match="1x1 conv"):
        quantize(models.create("resnet20", width_mult=0.25), QuantConfig(method="bwn"))
    with pytest.warns(UserWarning, match="6-bit activations"):
        quantize(models.create("vgg11", width_mult=0.125), QuantConfig(method="dorefa", act_bits=6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize(models.create("vgg11", width_mult=0.125), QuantConfig(method="hwgq-bwn"))
    assert [str(w.message) for w in caught] == []  # 3x3 convs and 2-bit activations: nothing to warn about


def test_latent_weights_clipped_for_bnn_only(vgg):
    for method, clipped in (("bnn", True), ("bwn", False)):
        qmodel = quantize(vgg, QuantConfig(method=method))
        with torch.no_grad():
            qmodel.features[3].weight.mul_(100)
        clip_latent_weights(qmodel)
        assert (qmodel.features[3].weight.abs().max() <= 1) == clipped


def test_stochastic_training_is_random_and_eval_deterministic(vgg):
    qmodel = quantize(vgg, QuantConfig(method="bnn-stochastic"))
    x = torch.randn(2, 3, 32, 32)
    qmodel.train()
    assert not torch.equal(qmodel(x), qmodel(x))
    qmodel.eval()
    assert torch.equal(qmodel(x), qmodel(x))


def test_activation_bits_for_a_method_with_float_activations_are_refused():
    with pytest.raises(UserError, match="keeps activations float"):
        QuantConfig(method="bwn", act_bits=2)
    with pytest.raises(UserError, match="keeps activations float"):
        QuantConfig(method="hwgq-bwn", act="float", act_bits=2)
    assert QuantConfig(method="twn").resolve()["act"] is None


def test_hwgq_without_batchnorm_names_the_layer_and_both_ways_out():
    with pytest.raises(UserError, match=r"needs BatchNorm.*overrides=.*'float'") as caught:
        quantize(models.create("resnet20", width_mult=0.25), QuantConfig(method="hwgq-bwn"))
    assert "\n" not in str(caught.value) and "bwn" in str(caught.value)
