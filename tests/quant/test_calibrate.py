import pytest
import torch

from torchslim import models
from torchslim.quant import ActQuant, QuantConfig, quantize
from torchslim.quant.calibrate import calibrate_act_scales, fit_level_scale, level_mse
from torchslim.quant.hwgq import hwgq_levels

from .conftest import frozen_round_trip


@pytest.mark.parametrize("std", [0.25, 1.0, 4.0])
def test_fitted_scale_follows_the_input_spread_and_is_a_minimum(std):
    levels, thresholds = hwgq_levels(2)
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * std
    scale = fit_level_scale(x, levels, thresholds)
    assert scale == pytest.approx(std, rel=0.02)  # the unit shape is Lloyd-Max for a unit half-normal
    unit_l, unit_t = torch.tensor(levels, dtype=torch.float64), torch.tensor(thresholds, dtype=torch.float64)
    best = level_mse(x, unit_l * scale, unit_t * scale)
    for factor in (0.9, 0.97, 1.03, 1.1):
        assert level_mse(x, unit_l * scale * factor, unit_t * scale * factor) > best


def test_fitted_scale_of_an_input_with_no_positive_value_is_one():
    levels, thresholds = hwgq_levels(2)
    assert fit_level_scale(-torch.rand(100), levels, thresholds) == 1.0


def test_set_scale_scales_levels_thresholds_and_gradient_range():
    act = ActQuant("hwgq", 2)
    act.set_scale(2.5)
    levels, thresholds = hwgq_levels(2)
    assert torch.allclose(act.levels, torch.tensor(levels) * 2.5)
    assert torch.allclose(act.thresholds, torch.tensor(thresholds) * 2.5)
    assert act.hi == pytest.approx(levels[-1] * 2.5, rel=1e-6)
    x = torch.tensor([-1.0, 0.5, 2.0, 4.0, 5.0], requires_grad=True)
    act.train()(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # passes inside [0, 2.5 * 1.894]
    with pytest.raises(ValueError):
        ActQuant("sign", 1).set_scale(2.0)


@pytest.fixture(scope="module")
def scaled_vgg():
    torch.manual_seed(0)
    model = models.create("vgg14", width_mult=0.125).eval()
    for module in model.modules():  # BatchNorm outputs far from unit scale
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(3.0, 4.0)
    return model


def test_calibration_matches_the_layer_spread_and_survives_freeze_and_reload(scaled_vgg, tmp_path):
    qmodel = quantize(scaled_vgg, QuantConfig(method="hwgq-bwn"))
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    scales = calibrate_act_scales(qmodel, batches)
    acts = [name for name, m in qmodel.named_modules() if isinstance(m, ActQuant)]
    assert list(scales) == acts and len(acts) == 13
    assert all(2.0 < s < 6.0 for s in scales.values())  # gammas of 3-4 on a unit input
    x = batches[0]
    loaded = frozen_round_trip(qmodel, x, tmp_path)
    act = loaded.get_submodule(acts[0])
    assert torch.equal(act.levels, qmodel.get_submodule(acts[0]).levels)
    assert act.hi == pytest.approx(float(act.levels[-1]))


def test_calibration_lowers_each_layers_quantization_error(scaled_vgg):
    qmodel = quantize(scaled_vgg, QuantConfig(method="hwgq-bwn")).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    name = "features.2"
    captured = {}
    handle = qmodel.get_submodule(name).register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    qmodel(x)
    act = qmodel.get_submodule(name)
    before = level_mse(captured["x"], act.levels, act.thresholds)
    calibrate_act_scales(qmodel, [x])
    qmodel(x)
    handle.remove()
    after = level_mse(captured["x"], act.levels, act.thresholds)
    assert after < 0.5 * before
