"""BatchNorm recalibration after pruning: the statistics describe the pruned network."""

import torch

from torchslim.prune import PruneConfig, prune
from torchslim.train.batchnorm import recalibrate_batchnorm

from .conftest import build, calibration


def _conv_output(model, x):
    with torch.no_grad():
        return model.features[0](x)


def test_statistics_are_the_calibration_batch_moments():
    """With one batch the running mean is that batch's mean and the running variance its
    unbiased variance, layer by layer; weights, momentum and the training flag are kept."""
    model = build("vgg11")
    x, _ = calibration("vgg11", 16)[0]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_batchnorm(model, [(x, None)]) == 8
    first = _conv_output(model, x)
    assert torch.allclose(model.features[1].running_mean, first.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert torch.allclose(model.features[1].running_var, first.var((0, 2, 3), unbiased=True), rtol=1e-4)
    second = model.features[4](model.features[3](model.features[2](model.features[1](first))))
    assert torch.allclose(model.features[5].running_mean, second.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert model.features[1].momentum == 0.1 and not model.training


def test_prune_recalibrates_by_default_and_not_when_asked():
    model = build("resnet20")
    batches = calibration("resnet20", 16)
    config = PruneConfig(criterion="l1", target_macs=0.5, calibration_batches=1)
    recalibrated = prune(model, config, batches)
    kept = prune(model, PruneConfig(criterion="l1", target_macs=0.5, recalibrate_bn=False),
                 batches)
    without_data = prune(model, config=config)
    assert recalibrated.bn_recalibrated == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert kept.bn_recalibrated == 0 and without_data.bn_recalibrated == 0
    x = batches[0][0]
    with torch.no_grad():
        out = recalibrated.model.conv1(x)  # the stem conv and its BN
    assert torch.allclose(recalibrated.model.bn1.running_mean, out.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    # Without recalibration the kept channels keep the original statistics.
    assert not torch.allclose(kept.model.bn1.running_mean, out.mean((0, 2, 3)), atol=1e-3)
    assert torch.equal(kept.model.bn1.running_mean, without_data.model.bn1.running_mean)
