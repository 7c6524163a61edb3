import pytest
import torch

from torchslim.quant import functions as qf
from torchslim.quant.modules import ACT_QUANTIZERS, WEIGHT_QUANTIZERS, ActQuant, get_weight_quantizer


def test_sign_of_zero_is_plus_one_and_hardtanh_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = qf.sign(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.backward(torch.arange(1.0, 8.0))
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]


def test_stochastic_sign_probability_is_hard_sigmoid():
    torch.manual_seed(0)
    x = torch.tensor([-1.5, -0.5, 0.0, 0.6, 2.0]).repeat(20000, 1)
    codes = qf.stochastic_sign_codes(x)
    assert set(codes.unique().tolist()) == {-1, 1}
    frequency = (codes == 1).float().mean(0)
    expected = qf.hard_sigmoid(x[0])
    assert torch.allclose(frequency, expected, atol=0.015)
    x = x[:1].clone().requires_grad_()
    qf.stochastic_sign(x).sum().backward()
    assert x.grad.tolist() == [[0, 1, 1, 1, 0]]


def test_bwn_scale_is_mean_abs_per_channel():
    w = torch.randn(4, 3, 3, 3)
    codes, scale = qf.bwn_encode(w)
    assert torch.equal(scale, w.abs().mean(dim=(1, 2, 3)))
    assert torch.equal(codes, torch.where(w >= 0, 1, -1).to(torch.int8))


def test_bwn_gradient_is_chain_rule_through_mean_with_hardtanh_sign():
    w = (torch.randn(3, 5) * 0.8).requires_grad_()
    g = torch.randn(3, 5)
    codes, scale = qf.bwn_encode(w)
    qf.apply_weight_codes(w, codes, scale, "scaled").backward(g)
    # Reference: autograd of alpha(W) * sign_ste(W).
    w2 = w.detach().clone().requires_grad_()
    (w2.abs().mean(1, keepdim=True) * qf.sign(w2)).backward(g)
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)


def test_twn_threshold_and_scale():
    w = torch.tensor([[0.1, -0.9, 0.5, -0.05, 1.2]])
    codes, scale = qf.twn_encode(w)
    delta = 0.7 * w.abs().mean()
    keep = w.abs() > delta
    assert codes.tolist() == (torch.sign(w) * keep).to(torch.int8).tolist()
    assert torch.allclose(scale, w.abs()[keep].mean().reshape(1))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_dorefa_weights_levels(bits):
    w = torch.randn(8, 16, 3, 3)
    codes, scale = qf.dorefa_weight_encode(w, bits)
    values = qf.decode(codes, scale)
    assert len(values.unique()) <= 2 ** bits
    if bits > 1:
        n = 2 ** bits - 1
        t = torch.tanh(w)
        expected = 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1
        assert torch.allclose(values, expected, atol=1e-6)
        assert values.abs().max() <= 1 + 1e-6


def test_dorefa_activation_levels_and_gradient():
    act = ActQuant("dorefa", 2)
    x = torch.tensor([-0.5, 0.1, 0.2, 0.5, 0.9, 1.3], requires_grad=True)
    y = act(x)
    assert torch.allclose(y, torch.round(x.clamp(0, 1) * 3) / 3)
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]


def test_affine_fake_quant_matches_formula_and_masks_gradient():
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0, 5.0], requires_grad=True)
    scale, zero = torch.tensor(0.01), torch.tensor(100.0)
    y = qf.affine_fake_quant(x, scale, zero, 8)
    codes = torch.clamp(torch.round(x / scale + zero), 0, 255)
    assert torch.allclose(y, (codes - zero) * scale)
    assert len(y.unique()) == 4 and y.max().item() == pytest.approx(1.55)  # 2.0 and 5.0 saturate
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 0, 0]


def test_int8_weights_round_trip():
    w = torch.randn(6, 10)
    codes, scale = qf.int8_weight_encode(w)
    assert codes.abs().max() == 127
    assert torch.allclose(qf.decode(codes, scale), w, atol=float(scale.max()) / 2 + 1e-7)


# Distinct codes (= distinct decoded values per channel) of each weight quantizer, by name: bits -> count.
EXPECTED_WEIGHT_CODES = {
    "sign": lambda bits: 2,
    "stochastic_sign": lambda bits: 2,
    "bwn": lambda bits: 2,
    "twn": lambda bits: 3,  # {-1, 0, +1}
    "dorefa": lambda bits: 2 ** bits,  # odd integers -(2^k - 1) .. 2^k - 1
    "int8": lambda bits: 2 ** bits - 1,  # symmetric -(2^(k-1) - 1) .. 2^(k-1) - 1
}


@pytest.mark.parametrize("name", sorted(WEIGHT_QUANTIZERS))
def test_every_weight_quantizer_codes_count_and_exact_decode(name):
    if name not in EXPECTED_WEIGHT_CODES:
        pytest.fail(f"weight quantizer {name!r} has no stated code count: add it to EXPECTED_WEIGHT_CODES")
    quantizer = WEIGHT_QUANTIZERS[name]
    spread = torch.linspace(-3, 3, 6001)  # far past every data-dependent threshold, finer than any step
    for bits in quantizer.bits:
        expected = EXPECTED_WEIGHT_CODES[name](bits)
        assert quantizer.num_codes(bits) == expected, (name, bits)
        # Every channel spans the full range (shuffled), so each must use exactly `expected` codes.
        generator = torch.Generator().manual_seed(bits)
        w = torch.stack([spread[torch.randperm(len(spread), generator=generator)] for _ in range(4)])
        codes, scale = quantizer.encode(w, bits)
        decoded = qf.decode(codes, scale)
        for channel in range(4):
            assert len(codes[channel].unique()) == expected, (name, bits, channel)
            assert len(decoded[channel].unique()) == expected, (name, bits, channel)
        if quantizer.stochastic is not None:
            codes, _ = quantizer.stochastic(w, bits, generator)
            assert all(len(codes[channel].unique()) == expected for channel in range(4)), (name, bits)
    for bits in quantizer.bits[:3]:
        w = torch.randn(16, 32, 3, 3) * 0.3
        codes, scale = quantizer.encode(w, bits)
        assert codes.dtype == torch.int8 and codes.shape == w.shape and scale.shape == (16,)
        assert len(codes.unique()) <= quantizer.num_codes(bits)
        # Every encoder is monotone and keeps the sign: sorting a channel's weights sorts its
        # decoded values, and no decoded value has the opposite sign of its latent weight.
        decoded = qf.decode(codes, scale).flatten(1)
        order = w.flatten(1).argsort(1)
        assert (decoded.gather(1, order).diff(dim=1) >= 0).all()
        assert (decoded * w.flatten(1) >= 0).all()


def _edge_weights(shape, dtype, seed=0):
    """Weights of ``shape`` (dim 0 = output channels) whose every channel holds the hardtanh clip
    edges +-1 exactly, their float neighbours just outside and just inside, 0, values far outside
    [-1, 1] and a spread of ordinary values, each channel at its own scale."""
    one = torch.tensor(1.0, dtype=dtype)
    above, below = torch.nextafter(one, 2 * one), torch.nextafter(one, 0 * one)
    edges = torch.stack([one, -one, above, -above, below, -below, 0 * one, 3 * one, -2.5 * one, 1.5 * one])
    out, per_channel = shape[0], int(torch.tensor(shape[1:]).prod())
    generator = torch.Generator().manual_seed(seed)
    spread = torch.randn(out, per_channel - len(edges), generator=generator, dtype=dtype)
    spread *= torch.linspace(0.3, 1.5, out, dtype=dtype)[:, None]
    return torch.cat([edges.expand(out, -1), spread], 1).reshape(shape)


def _hardtanh_grad(w, g):
    """BinaryConnect / BNN: sign replaced by hardtanh, ``g * 1[|W| <= 1]``."""
    return g * (w.abs() <= 1).to(g.dtype)


def _identity_grad(w, g):
    """The plain straight-through estimator: the gradient passes unchanged."""
    return g.clone()


def _xnor_scaled_grad(w, g):
    """XNOR-Net: the exact derivative of ``alpha(W) * sign(W)``, ``alpha_c = mean|W_c|`` over the
    channel's n weights, sign replaced by hardtanh (sign(0) = +1):
    ``g_i * alpha * 1[|W_i| <= 1] + sign(W_i) / n * sum_j g_j sign(W_j)``."""
    w64, g64 = w.double().flatten(1), g.double().flatten(1)
    signs = torch.where(w64 >= 0, 1.0, -1.0).double()
    alpha = w64.abs().mean(1, keepdim=True)
    n = w64.shape[1]
    grad = g64 * alpha * (w64.abs() <= 1) + signs * (g64 * signs).sum(1, keepdim=True) / n
    return grad.reshape(w.shape)


def _dorefa_grad(w, g):
    """DoReFa k > 1: round replaced by the identity, ``2w' - 1 = tanh(W) / max|tanh W|`` with the
    whole-layer max held constant, so ``g * sech(W)^2 / max|tanh W|``."""
    w64 = w.double()
    return g.double() / torch.cosh(w64) ** 2 / torch.tanh(w64).abs().max()


# The backward each registered weight quantizer must have, by name: bits -> (STE mode, gradient).
# A quantizer added to the registry fails the gradient test until its backward is stated here.
EXPECTED_WEIGHT_BACKWARD = {
    "sign": lambda bits: ("hardtanh", _hardtanh_grad),
    "stochastic_sign": lambda bits: ("hardtanh", _hardtanh_grad),
    "bwn": lambda bits: ("scaled", _xnor_scaled_grad),
    "twn": lambda bits: ("identity", _identity_grad),
    "dorefa": lambda bits: ("identity", _identity_grad) if bits == 1 else ("dorefa", _dorefa_grad),
    "int8": lambda bits: ("identity", _identity_grad),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(WEIGHT_QUANTIZERS))
def test_every_weight_quantizer_straight_through_gradient_is_exact(name, dtype):
    """The latent weight's gradient through a training-mode layer is the quantizer's documented
    STE, computed here from the weights alone, at every bit width, at and around the clip edges."""
    from torchslim.quant.modules import QuantConv2d, QuantLinear

    if name not in EXPECTED_WEIGHT_BACKWARD:
        pytest.fail(f"weight quantizer {name!r} has no stated backward: add it to EXPECTED_WEIGHT_BACKWARD")
    quantizer = WEIGHT_QUANTIZERS[name]
    for bits in quantizer.bits:
        mode, expected_grad = EXPECTED_WEIGHT_BACKWARD[name](bits)
        assert quantizer.ste(bits) == mode, (name, bits)
        for layer in (QuantLinear(64, 4, weight_quant=name, weight_bits=bits),
                      QuantConv2d(2, 4, (4, 8), weight_quant=name, weight_bits=bits)):
            layer = layer.to(dtype).train()
            layer.generator = torch.Generator().manual_seed(bits)
            w = _edge_weights(tuple(layer.weight.shape), dtype, seed=bits)
            with torch.no_grad():
                layer.weight.copy_(w)
            g = torch.randn(w.shape, generator=torch.Generator().manual_seed(100 + bits), dtype=dtype)
            layer.quantized_weight().backward(g)
            expected = expected_grad(w, g)
            if mode in ("hardtanh", "identity"):  # masks and pass-through: bit for bit
                assert torch.equal(layer.weight.grad, expected), (name, bits, type(layer).__name__)
            else:
                tol = (1e-5 if dtype == torch.float32 else 1e-12) * float(expected.abs().max())
                assert torch.allclose(layer.weight.grad.double(), expected.double(), rtol=0, atol=tol), \
                    (name, bits, type(layer).__name__)


# Distinct output values of each activation quantizer (eval mode), by name: bits -> count.
EXPECTED_ACT_LEVELS = {
    "sign": lambda bits: 2,
    "approx_sign": lambda bits: 2,  # sign levels; the surrogate gradient only in training (test_bireal)
    "stochastic_sign": lambda bits: 2,
    "dorefa": lambda bits: 2 ** bits,  # i / (2^k - 1), i = 0 .. 2^k - 1
    "hwgq": lambda bits: 2 ** bits,  # 0 and 2^k - 1 positive Lloyd-Max levels
    "hwgq_uniform": lambda bits: 2 ** bits,
    "hwgq_zero_uniform": lambda bits: 2 ** bits,  # 0, D, .., (2^k - 1) D
}


@pytest.mark.parametrize("name", sorted(ACT_QUANTIZERS))
def test_every_act_quantizer_level_count_and_gradient_mask(name):
    if name not in EXPECTED_ACT_LEVELS:
        pytest.fail(f"activation quantizer {name!r} has no stated level count: add it to EXPECTED_ACT_LEVELS")
    quantizer = ACT_QUANTIZERS[name]
    for bits in quantizer.bits:
        act = ActQuant(name, bits).eval()
        # A wide, fine spread plus every threshold and its float neighbours on both sides.
        t = act.thresholds
        x = torch.cat([torch.linspace(-8, 8, 64001), t, torch.nextafter(t, t - 1), torch.nextafter(t, t + 1)])
        x.requires_grad_()
        y = act(x)
        expected = EXPECTED_ACT_LEVELS[name](bits)
        assert len(act.levels) == expected and len(y.unique()) == expected, (name, bits)
        assert torch.equal(y.unique(), act.levels), (name, bits)  # every level is reached, nothing else
        y.sum().backward()
        inside = (x >= act.lo) & (x <= act.hi)
        assert torch.equal(x.grad, inside.float())


def test_unknown_and_impossible_bits_are_user_errors():
    from torchslim.errors import UserError

    with pytest.raises(UserError, match="choose from"):
        get_weight_quantizer("binarize")
    with pytest.raises(UserError, match="cannot use 3 bits"):
        get_weight_quantizer("bwn", 3)
    with pytest.raises(UserError, match="cannot use 5 bits"):
        ActQuant("hwgq", 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties_up", [False, True])
def test_level_quantizer_matches_bucketize_and_clipped_mask_at_every_edge(ties_up, dtype):
    """The counting forward and fused backward pick exactly what bucketize and a mask pick,
    including values equal to a threshold or a gradient bound and their float neighbours."""
    from torchslim.quant.functions import quantize_levels

    levels = torch.tensor([0.0, 0.31, 0.77, 1.4], dtype=dtype)
    thresholds = torch.tensor([0.155, 0.54, 1.085], dtype=dtype)
    edges = torch.cat([thresholds, torch.tensor([0.0, 1.4], dtype=dtype)])
    near = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    x = torch.cat([near, torch.randn(5000, dtype=dtype) * 2]).reshape(-1, 5).t().requires_grad_()
    y = quantize_levels(x, levels, thresholds, ties_up, 0.0, 1.4)
    assert torch.equal(y, levels[torch.bucketize(x.detach().contiguous(), thresholds, right=ties_up)])
    grad = torch.randn_like(y)
    y.backward(grad)
    assert torch.equal(x.grad, grad * ((x >= 0) & (x <= 1.4)).to(dtype))
