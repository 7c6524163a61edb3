"""Quantizers as pure functions backed by ``torch.autograd.Function``.

Every weight quantizer here is split in two halves that the rest of the package
relies on:

* ``encode`` returns integer **codes** (an ``int8`` tensor the shape of the
  weight) and a per-output-channel **scale** (float, shape ``[out]``);
* :func:`decode` turns them back into a float weight, ``codes * scale``.

The training forward pass *is* ``decode(encode(w))`` so a frozen model that
stores only codes and scales computes bit-identical outputs.  The backward pass
is a straight-through estimator (STE) given in each docstring.

Activation quantizers are described by their **levels** ``q_0 < ... < q_n`` and
**thresholds** ``t_1 < ... < t_n``: ``Q(x) = q_i`` where ``i`` is the number of
thresholds below ``x`` (see :func:`quantize_levels`).  That one representation
covers sign, DoReFa and HWGQ, so a frozen activation is just two small vectors.
"""

from __future__ import annotations

import torch

__all__ = [
    "decode",
    "sign",
    "sign_codes",
    "stochastic_sign",
    "stochastic_sign_codes",
    "hard_sigmoid",
    "bwn_encode",
    "twn_encode",
    "dorefa_weight_encode",
    "int8_weight_encode",
    "apply_weight_codes",
    "quantize_levels",
    "affine_fake_quant",
    "round_ste",
    "approx_sign",
]


def _pass_inside(grad: torch.Tensor, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``grad * 1[lo <= x <= hi]`` in one fused pass.

    ``hardtanh_backward`` keeps the gradient where ``lo' < x < hi'`` (strictly); with ``lo'`` and
    ``hi'`` the neighbouring representable numbers of ``x``'s dtype just outside ``[lo, hi]``,
    that is exactly ``lo <= x <= hi``.  About 10x faster on CPU than mask, convert, multiply.
    """
    bounds = torch.tensor([lo, hi], dtype=x.dtype)
    outside = torch.nextafter(bounds, torch.tensor([float("-inf"), float("inf")], dtype=x.dtype)).tolist()
    return torch.ops.aten.hardtanh_backward(grad, x, outside[0], outside[1])


def _channel_dims(w: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, w.dim()))


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def decode(codes: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``W = codes * scale`` with ``scale`` broadcast per output channel (dim 0)."""
    return codes.to(dtype) * _per_channel(scale.to(dtype), codes)


# --------------------------------------------------------------------------- sign


def sign_codes(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` with ``sign(0) = +1``, as ``int8`` codes in {-1, +1}.

    As the ``sign`` weight encoder (scale 1) it is backed by the ``"hardtanh"`` STE of
    :class:`_WeightSTE`: BinaryConnect (Courbariaux, Bengio, David, NeurIPS 2015) and BNN
    (Hubara, Courbariaux et al., "Binarized Neural Networks", NeurIPS 2016) weights."""
    return torch.where(x >= 0, 1, -1).to(torch.int8)


class _SignSTE(torch.autograd.Function):
    r"""Deterministic binarization with the hardtanh straight-through estimator.

    Forward:  :math:`q = \mathrm{sign}(x)`, with :math:`\mathrm{sign}(0) = +1`.

    Backward: :math:`\partial L / \partial x = \partial L / \partial q \cdot 1_{|x| \le 1}`
    (the gradient of hardtanh).

    Courbariaux, Hubara et al., "Binarized Neural Networks", NeurIPS 2016 (BNN).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _pass_inside(grad, x, -1.0, 1.0)


def sign(x: torch.Tensor) -> torch.Tensor:
    """Binarize to {-1, +1} (sign(0) = +1) with the hardtanh STE; see :class:`_SignSTE`."""
    return _SignSTE.apply(x)


class _ApproxSignSTE(_SignSTE):
    r"""Binarization with Bi-Real-Net's piecewise-polynomial gradient.

    Forward:  :math:`q = \mathrm{sign}(x)`, with :math:`\mathrm{sign}(0) = +1` (as :class:`_SignSTE`).

    Backward: :math:`\partial L / \partial x = \partial L / \partial q \cdot \max(0, 2 - 2|x|)`, the
    derivative of the quadratic that approximates the sign on [-1, 1]; closer to the step than
    hardtanh's constant 1.

    Liu et al., "Bi-Real Net", ECCV 2018, eq. 6.
    """

    @staticmethod
    def backward(ctx, grad):  # the forward is _SignSTE's
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_min(0.0)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """Binarize to {-1, +1} (sign(0) = +1) with Bi-Real-Net's gradient; see :class:`_ApproxSignSTE`."""
    return _ApproxSignSTE.apply(x)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma(x) = \mathrm{clip}((x + 1) / 2, 0, 1)`."""
    return ((x + 1) * 0.5).clamp(0, 1)


def stochastic_sign_codes(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Stochastic binarization: +1 with probability :math:`\sigma(x)` (hard sigmoid), else -1.

    Courbariaux, Bengio, David, "BinaryConnect", NeurIPS 2015, eq. 3.  As the
    ``stochastic_sign`` weight encoder (scale 1) it is backed by the ``"hardtanh"`` STE of
    :class:`_WeightSTE`, :math:`g \cdot 1_{|W| \le 1}`.
    """
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(noise < hard_sigmoid(x.detach()), 1, -1).to(torch.int8)


class _StochasticSign(torch.autograd.Function):
    r"""Stochastic binarization of activations with the hardtanh STE.

    Forward: :math:`q = +1` with probability :math:`\sigma(x) = \mathrm{clip}((x+1)/2, 0, 1)`,
    else :math:`-1`.  Backward: :math:`g \cdot 1_{|x| \le 1}`.

    Courbariaux, Bengio, David, "BinaryConnect", NeurIPS 2015; Hubara et al., BNN 2016.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return stochastic_sign_codes(x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _pass_inside(grad, x, -1.0, 1.0)


def stochastic_sign(x: torch.Tensor) -> torch.Tensor:
    """Stochastic {-1, +1} with the hardtanh STE; see :class:`_StochasticSign`."""
    return _StochasticSign.apply(x)


# ------------------------------------------------------------- weight encoders
# Each returns (codes int8, scale float [out_channels]).


def bwn_encode(w: torch.Tensor):
    r"""Binary-weight network: :math:`W \approx \alpha B`, :math:`B = \mathrm{sign}(W)`,
    :math:`\alpha_c = \mathrm{mean}|W_c|` per output channel (the L2-optimal scale for a
    fixed B). Rastegari et al., "XNOR-Net", ECCV 2016, eq. 2-4.

    Backward: the ``"scaled"`` STE of :class:`_WeightSTE`, the exact derivative of
    :math:`\alpha(W)\,\mathrm{sign}(W)` with sign replaced by hardtanh,
    :math:`g_i \alpha_c 1_{|W_i| \le 1} + \mathrm{sign}(W_i)/n \sum_j g_j \mathrm{sign}(W_j)`
    over the channel's n weights (XNOR-Net, sec. 3.1)."""
    w = w.detach()
    return sign_codes(w), w.abs().mean(dim=_channel_dims(w))


def twn_encode(w: torch.Tensor, delta_factor: float = 0.7):
    r"""Ternary weight network: :math:`\Delta_c = 0.7\,\mathrm{mean}|W_c|`,
    :math:`T = \mathrm{sign}(W)\,1_{|W| > \Delta}`, :math:`\alpha_c = \mathrm{mean}_{|W| > \Delta}|W_c|`.
    Li, Zhang, Liu, "Ternary Weight Networks", 2016, eq. 10-11.

    Backward: the ``"identity"`` STE of :class:`_WeightSTE`, :math:`\partial L/\partial W =
    \partial L/\partial W_q` (the ternary weight's gradient updates the latent one)."""
    w = w.detach()
    dims = _channel_dims(w)
    delta = delta_factor * w.abs().mean(dim=dims, keepdim=True)
    keep = w.abs() > delta
    codes = (sign_codes(w) * keep).to(torch.int8)
    count = keep.sum(dim=dims).clamp_min(1)
    scale = (w.abs() * keep).sum(dim=dims) / count
    return codes, scale


def dorefa_weight_encode(w: torch.Tensor, bits: int):
    r"""DoReFa-Net k-bit weights (Zhou et al. 2016, eq. 9 and 11).

    k = 1: :math:`W_q = E(|W|)\,\mathrm{sign}(W)` with one scale per layer.
    k > 1: :math:`w' = \tanh W / (2 \max|\tanh W|) + 1/2`,
    :math:`W_q = 2\,\mathrm{round}((2^k-1) w') / (2^k-1) - 1`.  As codes:
    :math:`c = 2\,\mathrm{round}((2^k-1) w') - (2^k-1)` (odd integers), scale :math:`1/(2^k-1)`.

    Backward (Zhou et al., arXiv:1606.06160): k = 1, the ``"identity"`` STE of
    :class:`_WeightSTE`, :math:`g`; k > 1, its ``"dorefa"`` STE, round replaced by the identity
    and :math:`\max|\tanh W|` held constant, :math:`g\,(1 - \tanh^2 W) / \max|\tanh W|`.
    """
    w = w.detach()
    out = w.shape[0]
    if bits == 1:
        return sign_codes(w), w.abs().mean().expand(out).clone()
    n = 2 ** bits - 1
    t = torch.tanh(w)
    normed = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5
    codes = (2 * torch.round(normed * n) - n).to(torch.int8)
    return codes, torch.full((out,), 1.0 / n, dtype=w.dtype, device=w.device)


def int8_weight_encode(w: torch.Tensor, bits: int = 8):
    r"""Symmetric per-channel integer weights: :math:`s_c = \max|W_c| / (2^{k-1}-1)`,
    :math:`c = \mathrm{clip}(\mathrm{round}(W / s_c), -(2^{k-1}-1), 2^{k-1}-1)`.
    Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018.

    Backward: the ``"identity"`` STE of :class:`_WeightSTE`, :math:`g` (the scale comes from
    :math:`\max|W_c|`, so no weight is clipped and the in-range STE passes every gradient)."""
    w = w.detach()
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=_channel_dims(w)).clamp_min(1e-12) / qmax
    codes = torch.round(w / _per_channel(scale, w)).clamp(-qmax, qmax).to(torch.int8)
    return codes, scale


class _WeightSTE(torch.autograd.Function):
    r"""Forward: :math:`W_q = \mathrm{decode}(codes, scale)`, computed once by the encoder.

    Backward, by ``mode``:

    * ``"hardtanh"``: :math:`g \cdot 1_{|W| \le 1}` (BinaryConnect / BNN, scale-free);
    * ``"scaled"``: the exact derivative of :math:`\alpha(W)\,\mathrm{sign}(W)` with the sign
      replaced by hardtanh: :math:`g_i \alpha 1_{|W_i| \le 1} + \mathrm{sign}(W_i)/n \sum_j g_j
      \mathrm{sign}(W_j)` per channel (XNOR-Net, sec. 3.1);
    * ``"dorefa"``: :math:`g\,(1 - \tanh^2 W) / \max|\tanh W|`, the derivative of DoReFa's
      :math:`2w' - 1` with round replaced by the identity (the max is held constant);
    * ``"identity"``: :math:`g` (TWN, int8: the plain STE).
    """

    @staticmethod
    def forward(ctx, w, codes, scale, mode):
        ctx.mode = mode
        ctx.save_for_backward(w, codes, scale)
        return decode(codes, scale, w.dtype)

    @staticmethod
    def backward(ctx, grad):
        w, codes, scale = ctx.saved_tensors
        if ctx.mode == "identity":
            return grad, None, None, None
        if ctx.mode == "dorefa":
            t = torch.tanh(w)
            return grad * (1 - t * t) / t.abs().max().clamp_min(1e-12), None, None, None
        inside = (w.abs() <= 1).to(grad.dtype)
        if ctx.mode == "hardtanh":
            return grad * inside, None, None, None
        signs = codes.to(grad.dtype)
        n = w[0].numel()
        mean_term = (grad * signs).sum(dim=_channel_dims(w), keepdim=True) / n
        return grad * inside * _per_channel(scale, w) + signs * mean_term, None, None, None


def apply_weight_codes(w: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, mode: str) -> torch.Tensor:
    """The fake-quantized weight ``decode(codes, scale)`` with the STE ``mode`` (see :class:`_WeightSTE`)."""
    return _WeightSTE.apply(w, codes, scale, mode)


# ---------------------------------------------------------- level quantizers


class _LevelQuant(torch.autograd.Function):
    r"""Quantize to levels by thresholds, with a clipped straight-through backward.

    The autograd function behind the sign, DoReFa and HWGQ activations (``modules.ActQuant``;
    stochastic sign too in eval mode).

    Forward: :math:`Q(x) = q_i`, :math:`i = \#\{k : x \ge t_k\}` (``ties_up``) or
    :math:`\#\{k : x > t_k\}`.

    Backward: :math:`g \cdot 1_{lo \le x \le hi}` (the step function replaced by the identity
    inside the range):

    * sign, levels :math:`\{-1, +1\}`, threshold 0: lo, hi = -1, 1, the hardtanh STE of
      Hubara, Courbariaux et al., "Binarized Neural Networks", NeurIPS 2016;
    * DoReFa k-bit, levels :math:`i / (2^k - 1)`, midpoint thresholds, i.e.
      :math:`\mathrm{round}((2^k - 1)\,\mathrm{clip}(x, 0, 1)) / (2^k - 1)`: lo, hi = 0, 1
      (Zhou et al., "DoReFa-Net", arXiv:1606.06160, 2016);
    * HWGQ, levels 0 and the Lloyd-Max levels :math:`q_1 < \dots < q_m` of the half-normal,
      thresholds 0 and the midpoints: lo, hi = 0, :math:`q_m`, the clipped ReLU backward of
      Cai, He, Sun, Vasconcelos, "Deep Learning with Low Precision by Half-wave Gaussian
      Quantization", CVPR 2017.
    """

    @staticmethod
    def forward(ctx, x, levels, thresholds, ties_up, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        levels = levels.to(x.dtype)
        if thresholds.numel() > 4:
            return levels[torch.bucketize(x, thresholds, right=ties_up)]
        # A few thresholds: count those passed, in place in one uint8 tensor (each comparison's
        # bool result viewed as uint8), then gather the levels.  On CPU this is about 2.5x faster
        # than bucketize or a chain of torch.where selects, and picks the very same level.
        compare = torch.ge if ties_up else torch.gt
        if torch.jit.is_tracing():  # the ONNX exporter's tracer cannot record dtype views: the same count in int64
            index = compare(x, thresholds[0]).long()
            for k in range(1, thresholds.numel()):
                index = index + compare(x, thresholds[k]).long()
            return levels[index]
        index = compare(x, thresholds[0]).view(torch.uint8)
        for k in range(1, thresholds.numel()):
            index.add_(compare(x, thresholds[k]).view(torch.uint8))
        return levels.index_select(0, index.reshape(-1).int()).view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _pass_inside(grad, x, ctx.lo, ctx.hi), None, None, None, None, None


def quantize_levels(x, levels, thresholds, ties_up: bool = True, lo: float = float("-inf"),
                    hi: float = float("inf")) -> torch.Tensor:
    """Map ``x`` to ``levels`` by ``thresholds`` with a clipped STE; see :class:`_LevelQuant`."""
    return _LevelQuant.apply(x, levels, thresholds, ties_up, float(lo), float(hi))


class _RoundSTE(torch.autograd.Function):
    """Forward: ``round(x)``. Backward: identity (Bengio et al. 2013's straight-through)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round`` with an identity gradient."""
    return _RoundSTE.apply(x)


class _AffineFakeQuant(torch.autograd.Function):
    r"""Affine (asymmetric) fake quantization to ``bits`` unsigned integers.

    Forward: :math:`c = \mathrm{clip}(\mathrm{round}(x / s) + z, 0, 2^k - 1)`,
    :math:`\hat x = (c - z)\,s`.

    Backward: :math:`g \cdot 1_{c_{\min} \le x / s + z \le c_{\max}}` (STE inside the range).
    Jacob et al., CVPR 2018.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, bits):
        qmax = 2 ** bits - 1
        raw = x / scale + zero_point
        ctx.save_for_backward((raw >= 0) & (raw <= qmax))
        codes = torch.round(raw).clamp(0, qmax)
        return (codes - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None


def affine_fake_quant(x, scale, zero_point, bits: int = 8) -> torch.Tensor:
    """Affine fake quantization with an in-range STE; see :class:`_AffineFakeQuant`."""
    return _AffineFakeQuant.apply(x, scale, zero_point, bits)
