import math

import pytest
import torch
import torch.nn.functional as F

from torchslim.distill import LOSSES, check_kd_args, get_loss, list_losses
from torchslim.errors import UserError

NAMES = list_losses()


def _batch(seed=0, n=16, k=10, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, generator=gen, dtype=torch.float64) * scale
    t = torch.randn(n, k, generator=gen, dtype=torch.float64) * scale
    y = torch.randint(0, k, (n,), generator=gen)
    return s, t, y


def test_registry_has_the_three_formulations():
    assert set(NAMES) >= {"hinton", "mxnet", "tf"}
    with pytest.raises(UserError, match="did you mean 'hinton'"):
        get_loss("hintn")


@pytest.mark.parametrize("name", NAMES)
def test_alpha_zero_t_one_is_the_hard_loss_exactly(name):
    s, t, y = _batch()
    loss = LOSSES[name]
    assert torch.equal(loss(s, t, y, temperature=1.0, alpha=0.0), loss.hard_loss(s, y))


@pytest.mark.parametrize("name", ["hinton", "mxnet"])
def test_alpha_zero_is_cross_entropy(name):
    s, t, y = _batch(1)
    for temperature in (1.0, 4.0):
        assert torch.equal(LOSSES[name](s, t, y, temperature, 0.0), F.cross_entropy(s, y))


def test_hinton_formula_by_hand():
    s, t, y = _batch(2)
    T, a = 3.0, 0.7
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    expected = a * T * T * kl + (1 - a) * F.cross_entropy(s, y)
    assert torch.allclose(LOSSES["hinton"](s, t, y, T, a), expected, rtol=1e-12)


def test_mxnet_formula_and_relation_to_hinton():
    s, t, y = _batch(3)
    T, a = 2.5, 0.6
    p_t = torch.softmax(t / T, 1)
    mimic = -(p_t * torch.log_softmax(s / T, 1)).sum(1).mean()
    expected = a * mimic + (1 - a) * F.cross_entropy(s, y)
    assert torch.allclose(LOSSES["mxnet"](s, t, y, T, a), expected, rtol=1e-12)
    # the mimic term is KL plus the teacher's entropy (a constant): the T=1 gradients agree
    grads = []
    for name in ("hinton", "mxnet"):
        x = s.clone().requires_grad_(True)
        LOSSES[name](x, t, y, 1.0, a).backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_tf_formula_by_hand():
    s, t, y = _batch(4)
    tau, a = 3.0, 0.25
    lam = 1 - a
    onehot = F.one_hot(y, 10).double()
    z = s / tau
    bce = (torch.clamp(z, min=0) - z * onehot + torch.log1p(torch.exp(-z.abs()))).sum()
    sq = 0.5 * ((s / tau - t / tau) ** 2).sum()
    expected = (lam * bce + (1 - lam) * sq) / s.shape[0]
    assert torch.allclose(LOSSES["tf"](s, t, y, tau, a), expected, rtol=1e-12)


def _soft_grad(name, s, t, y, temperature):
    x = s.clone().requires_grad_(True)
    LOSSES[name](x, t, y, temperature, 1.0).backward()
    return x.grad


def test_hinton_gradient_is_t_squared_times_the_kl_gradient():
    s, t, y = _batch(5)
    for T in (1.0, 2.0, 5.0, 10.0):
        x = s.clone().requires_grad_(True)
        F.kl_div(torch.log_softmax(x / T, 1), torch.softmax(t / T, 1), reduction="batchmean").backward()
        assert torch.allclose(_soft_grad("hinton", s, t, y, T), T * T * x.grad, rtol=1e-10, atol=1e-15)
        # closed form: T * (softmax(s/T) - softmax(t/T)) / N
        closed = T * (torch.softmax(s / T, 1) - torch.softmax(t / T, 1)) / s.shape[0]
        assert torch.allclose(_soft_grad("hinton", s, t, y, T), closed, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_gradient_scales_as_documented(name):
    s, t, y = _batch(6, scale=1.0)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)  # zero-mean logits, as in the analysis
    power = LOSSES[name].grad_power
    g20, g40 = _soft_grad(name, s, t, y, 20.0), _soft_grad(name, s, t, y, 40.0)
    ratio = g20.norm() / g40.norm()
    assert ratio == pytest.approx(2.0 ** -power, rel=0.02)
    # and the T-independent limit for hinton: (s - t) / (K N)
    if name == "hinton":
        limit = (s - t) / (s.shape[1] * s.shape[0])
        assert (_soft_grad(name, s, t, y, 200.0) - limit).norm() < 0.01 * limit.norm()


@pytest.mark.parametrize("name", NAMES)
def test_student_equal_to_teacher_has_zero_teacher_gradient(name):
    s, _, y = _batch(7)
    grad = _soft_grad(name, s, s.clone(), y, 4.0)
    assert grad.abs().max() < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_for_extreme_logits(name):
    s, t, y = _batch(8, scale=200.0)
    s, t = s.float(), t.float()
    for T in (0.5, 1.0, 20.0):
        assert math.isfinite(LOSSES[name](s, t, y, T, 0.5).item())


def test_bad_temperature_and_alpha_are_user_errors():
    for T in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="temperature"):
            check_kd_args(T, 0.5)
    for a in (-0.01, 1.01, float("nan")):
        with pytest.raises(UserError, match="alpha"):
            check_kd_args(4.0, a)
    assert check_kd_args(1, 0) == (1.0, 0.0) and check_kd_args(20, 1) == (20.0, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_distill_config_defaults_and_round_trip(name):
    from torchslim.distill import DistillConfig

    config = DistillConfig(loss=name)
    assert (config.temperature, config.alpha) == (LOSSES[name].default_temperature, LOSSES[name].default_alpha)
    explicit = DistillConfig(loss=name, temperature=7.0, alpha=0.0, hints=["a:b"], hint_weight=0.5)
    assert DistillConfig.from_dict(explicit.to_dict()) == explicit
    with pytest.raises(UserError, match="unknown distillation option"):
        DistillConfig.from_dict({"temprature": 3})
