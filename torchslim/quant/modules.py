"""Quantizer registry and the layers that use it.

* :data:`WEIGHT_QUANTIZERS` / :data:`ACT_QUANTIZERS`: quantizers by name, looked up with
  :func:`get_weight_quantizer` / :func:`get_act_quantizer` (as ``larq.quantizers.get``).
* :class:`QuantConv2d` / :class:`QuantLinear`: keep latent float weights and use
  ``decode(encode(W))`` in the forward pass (BinaryConnect-style training).
* :class:`FrozenConv2d` / :class:`FrozenLinear`: what :func:`~torchslim.quant.freeze`
  produces for deployment; they hold only ``codes`` (int8) and ``scale`` (float, one per
  output channel) and compute ``conv(x, codes * scale)``.
* :class:`ActQuant`: an activation quantizer given by ``levels`` and ``thresholds``
  buffers (the frozen form too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UserError
from ..io import register_module_type
from ..nn import BN_FOLDS, CompressedLayer, Registry, Conv2dGeometry, LinearGeometry, geometry_of
from ..nn import pair as _pair
from . import functions as qf
from .hwgq import hwgq_levels, zero_uniform_levels

__all__ = [
    "WeightQuantizer", "ActQuantizer", "WEIGHT_QUANTIZERS", "ACT_QUANTIZERS",
    "get_weight_quantizer", "get_act_quantizer", "QuantConv2d", "QuantLinear",
    "FrozenConv2d", "FrozenLinear", "ActQuant",
]


@dataclass(frozen=True)
class WeightQuantizer:
    """A weight quantizer: ``encode(w, bits) -> (codes int8, scale [out])``.

    ``ste(bits)`` names the backward rule (see ``functions._WeightSTE``); ``clip`` says
    whether latent weights are clipped to [-1, 1] after each step; ``stochastic`` encoders
    take a generator and are used only in training (eval uses ``encode``).
    """

    name: str
    bits: tuple[int, ...]
    encode: Callable
    ste: Callable[[int], str]
    clip: bool = False
    num_codes: Callable[[int], int] = lambda bits: 2
    stochastic: Callable | None = None


@dataclass(frozen=True)
class ActQuantizer:
    """An activation quantizer: ``levels_fn(bits) -> (levels, thresholds)``.

    ``ties_up``: a value equal to a threshold goes to the upper level.  ``grad_range``:
    the STE passes the gradient where ``lo <= x <= hi``.  ``needs_bn``: the input must
    come from BatchNorm (HWGQ assumes a unit Gaussian).  ``surrogate``: an autograd
    function used in training instead of the levels' clipped STE (same forward values).
    """

    name: str
    bits: tuple[int, ...]
    levels_fn: Callable
    ties_up: bool
    grad_range: Callable
    needs_bn: bool = False
    stochastic: bool = False
    surrogate: Callable | None = None


def _sign_weight(w, bits):
    return qf.sign_codes(w.detach()), torch.ones(w.shape[0], dtype=w.dtype, device=w.device)


def _stochastic_weight(w, bits, generator=None):
    return qf.stochastic_sign_codes(w.detach(), generator), torch.ones(w.shape[0], dtype=w.dtype, device=w.device)


WEIGHT_QUANTIZERS = Registry("weight quantizer")
ACT_QUANTIZERS = Registry("activation quantizer")


def _register(table, quantizer):
    return table.register(quantizer.name, quantizer)


_register(WEIGHT_QUANTIZERS, WeightQuantizer("sign", (1,), _sign_weight, lambda b: "hardtanh", clip=True))
_register(WEIGHT_QUANTIZERS, WeightQuantizer("stochastic_sign", (1,), _sign_weight, lambda b: "hardtanh",
                                             clip=True, stochastic=_stochastic_weight))
_register(WEIGHT_QUANTIZERS, WeightQuantizer("bwn", (1,), lambda w, b: qf.bwn_encode(w), lambda b: "scaled"))
_register(WEIGHT_QUANTIZERS, WeightQuantizer("twn", (2,), lambda w, b: qf.twn_encode(w), lambda b: "identity",
                                             num_codes=lambda b: 3))
_register(WEIGHT_QUANTIZERS, WeightQuantizer("dorefa", tuple(range(1, 8)), qf.dorefa_weight_encode,
                                             lambda b: "identity" if b == 1 else "dorefa",
                                             num_codes=lambda b: 2 ** b))
_register(WEIGHT_QUANTIZERS, WeightQuantizer("int8", tuple(range(2, 9)), qf.int8_weight_encode,
                                             lambda b: "identity", num_codes=lambda b: 2 ** b - 1))


def _sign_levels(bits):
    return [-1.0, 1.0], [0.0]


def _dorefa_levels(bits):
    """DoReFa k-bit activations (Zhou et al., "DoReFa-Net", arXiv:1606.06160, 2016): levels
    ``i / (2^k - 1)``, ``i = 0 .. 2^k - 1``, and midpoint thresholds ``(i - 1/2) / (2^k - 1)``,
    ``i = 1 .. 2^k - 1``; with ties going up that is ``round((2^k - 1) clip(x, 0, 1)) / (2^k - 1)``,
    halves rounded up.  The STE passes the gradient where ``0 <= x <= 1`` (``functions._LevelQuant``)."""
    n = 2 ** bits - 1
    return [i / n for i in range(n + 1)], [(i - 0.5) / n for i in range(1, n + 1)]


_register(ACT_QUANTIZERS, ActQuantizer("sign", (1,), _sign_levels, True, lambda lv: (-1.0, 1.0)))
_register(ACT_QUANTIZERS, ActQuantizer("stochastic_sign", (1,), _sign_levels, True, lambda lv: (-1.0, 1.0),
                                       stochastic=True))
_register(ACT_QUANTIZERS, ActQuantizer("approx_sign", (1,), _sign_levels, True, lambda lv: (-1.0, 1.0),
                                       surrogate=qf.approx_sign))
_register(ACT_QUANTIZERS, ActQuantizer("dorefa", tuple(range(1, 9)), _dorefa_levels, True, lambda lv: (0.0, 1.0)))
_register(ACT_QUANTIZERS, ActQuantizer("hwgq", (1, 2, 3, 4), hwgq_levels, False, lambda lv: (0.0, lv[-1]),
                                       needs_bn=True))
_register(ACT_QUANTIZERS, ActQuantizer("hwgq_uniform", (1, 2, 3, 4), lambda b: hwgq_levels(b, uniform=True),
                                       False, lambda lv: (0.0, lv[-1]), needs_bn=True))
_register(ACT_QUANTIZERS, ActQuantizer("hwgq_zero_uniform", (1, 2, 3, 4), zero_uniform_levels, False,
                                       lambda lv: (0.0, lv[-1]), needs_bn=True))


def _lookup(table, kind, name, bits):
    quantizer = table[name]  # an unknown name is a UserError naming the choices
    if bits not in quantizer.bits:
        raise UserError(f"{kind} quantizer {name!r} cannot use {bits} bits; it supports "
                        f"{', '.join(map(str, quantizer.bits))}")
    return quantizer


def get_weight_quantizer(name: str, bits: int = 1) -> WeightQuantizer:
    """The weight quantizer ``name``; a UserError for unknown names or impossible bit widths."""
    return _lookup(WEIGHT_QUANTIZERS, "weight", name, bits)


def get_act_quantizer(name: str, bits: int = 1) -> ActQuantizer:
    """The activation quantizer ``name``; a UserError for unknown names or impossible bit widths."""
    return _lookup(ACT_QUANTIZERS, "activation", name, bits)


class _QuantWeightMixin:
    """Shared by QuantConv2d and QuantLinear: latent ``weight`` -> codes, scale."""

    def _init_quant(self, weight_quant: str, weight_bits: int):
        self.quantizer = get_weight_quantizer(weight_quant, weight_bits)
        self.weight_quant, self.weight_bits = weight_quant, int(weight_bits)
        self.generator = None  # set a torch.Generator for reproducible stochastic training

    def encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic ``(codes int8, scale float [out])`` of the current latent weights."""
        return self.quantizer.encode(self.weight, self.weight_bits)

    def quantized_weight(self) -> torch.Tensor:
        """``decode(codes, scale)`` with the quantizer's straight-through gradient."""
        if self.training and self.quantizer.stochastic is not None:
            codes, scale = self.quantizer.stochastic(self.weight, self.weight_bits, self.generator)
        else:
            codes, scale = self.encode()
        return qf.apply_weight_codes(self.weight, codes, scale, self.quantizer.ste(self.weight_bits))

    def clip_latent_(self) -> None:
        """Clip latent weights to [-1, 1] when the method needs it (BinaryConnect)."""
        if self.quantizer.clip:
            with torch.no_grad():
                self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weight_quant={self.weight_quant}, weight_bits={self.weight_bits}"


def _scaled(y: torch.Tensor, scale: torch.Tensor, bias) -> torch.Tensor:
    """``y * scale + bias`` per output channel (dim 1)."""
    shape = (1, -1) + (1,) * (y.dim() - 2)
    y = y * scale.to(y.dtype).view(shape)
    return y if bias is None else y + bias.to(y.dtype).view(shape)


def exact_conv2d(x, codes, scale, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """``conv(x, codes) * scale + bias``: the float simulation of a deployed quantized conv.

    Accumulating integer codes (times +-1 or few-level activations) before scaling keeps
    the sums exact in float32, so bit-packed integer kernels reproduce it bit for bit;
    ``conv(x, codes * scale)`` would round differently in every partial sum.
    """
    return _scaled(F.conv2d(x, codes.to(x.dtype), None, stride, padding, dilation, groups), scale, bias)


def exact_linear(x, codes, scale, bias) -> torch.Tensor:
    """``(x codes^T) * scale + bias``: see :func:`exact_conv2d`."""
    return _scaled(F.linear(x, codes.to(x.dtype)), scale, bias)


@register_module_type
class QuantConv2d(_QuantWeightMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses the quantized latent weight."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_quant="bwn", weight_bits=1):
        nn.Conv2d.__init__(self, in_channels, out_channels, _pair(kernel_size), _pair(stride),
                           padding if isinstance(padding, str) else _pair(padding), _pair(dilation), groups, bias)
        self._init_quant(weight_quant, weight_bits)

    def forward(self, x):
        if not self.training:  # the deployed arithmetic, so freeze() changes no output bit
            codes, scale = self.encode()
            return exact_conv2d(x, codes, scale, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def get_config(self) -> dict:
        return {**geometry_of(self).config(), "weight_quant": self.weight_quant, "weight_bits": self.weight_bits}


@register_module_type
class QuantLinear(_QuantWeightMixin, nn.Linear):
    """``nn.Linear`` whose forward pass uses the quantized latent weight."""

    def __init__(self, in_features, out_features, bias=True, weight_quant="bwn", weight_bits=1):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_quant(weight_quant, weight_bits)

    def forward(self, x):
        if not self.training:
            codes, scale = self.encode()
            return exact_linear(x, codes, scale, self.bias)
        return F.linear(x, self.quantized_weight(), self.bias)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "weight_quant": self.weight_quant, "weight_bits": self.weight_bits}


class _FrozenMixin:
    """``codes`` (int8, the weight's shape) and ``scale`` (float [out]) buffers, optional bias.

    A frozen layer is a :class:`torchslim.nn.CompressedLayer`: ``to_float()`` gives the plain
    layer with the weight ``codes * scale``.
    """

    def _init_frozen(self, weight_shape, bias, weight_quant, weight_bits):
        self.weight_quant, self.weight_bits = weight_quant, int(weight_bits)
        self.register_buffer("codes", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(weight_shape[0]))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0]), requires_grad=False) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        """The float weight ``codes * scale``."""
        return qf.decode(self.codes, self.scale, self.scale.dtype)

    def load_codes(self, codes: torch.Tensor, scale: torch.Tensor, bias=None):
        self.codes.copy_(codes)
        self.scale = scale.detach().clone().to(self.scale.dtype)
        if bias is not None:
            self.bias.data.copy_(bias.detach())
        return self

    def get_config(self) -> dict:
        return {**self.geometry.config(), "weight_quant": self.weight_quant, "weight_bits": self.weight_bits}


@register_module_type
class FrozenConv2d(_FrozenMixin, CompressedLayer):
    """A deployed quantized conv: ``conv2d(x, codes * scale) + bias``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, weight_quant="bwn", weight_bits=1):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self._init_frozen((out_channels, in_channels // groups, *self.kernel_size), bias, weight_quant, weight_bits)

    @property
    def geometry(self) -> Conv2dGeometry:
        return Conv2dGeometry(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                              self.dilation, self.groups, self.bias is not None)

    def forward(self, x):
        return exact_conv2d(x, self.codes, self.scale, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)


@register_module_type
class FrozenLinear(_FrozenMixin, CompressedLayer):
    """A deployed quantized linear layer: ``x (codes * scale)^T + bias``."""

    def __init__(self, in_features, out_features, bias=True, weight_quant="bwn", weight_bits=1):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_frozen((out_features, in_features), bias, weight_quant, weight_bits)

    @property
    def geometry(self) -> LinearGeometry:
        return LinearGeometry(self.in_features, self.out_features, self.bias is not None)

    def forward(self, x):
        return exact_linear(x, self.codes, self.scale, self.bias)


@torch.no_grad()
def fold_into_scale(layer: FrozenConv2d | FrozenLinear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A frozen layer computing ``bn(layer(x))``: the BatchNorm becomes its per-channel scale and bias
    (``integer product * scale + bias``, the form the bit-serial kernels use)."""
    scale, bias = scale_bias_with_batchnorm(layer.scale, layer.bias, bn)
    replacement = type(layer)(**{**layer.get_config(), "bias": True})
    return replacement.load_codes(layer.codes, scale, bias)


@torch.no_grad()
def scale_bias_with_batchnorm(scale: torch.Tensor, bias: torch.Tensor | None, bn) -> tuple:
    """Per-channel (scale, bias) of ``bn(v * scale + bias)`` folded into one: the arithmetic every
    binary layer's folded BatchNorm uses (frozen layers, packed files, compiled residual units)."""
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = bn.bias - bn.running_mean * gain
    if bias is not None:
        folded = folded + bias * gain
    return scale * gain, folded


@register_module_type
class ActQuant(nn.Module):
    """Activation quantizer: ``Q(x) = levels[#thresholds below x]`` with a clipped STE.

    ``levels`` and ``thresholds`` are buffers (saved with the model); for HWGQ they are
    the Lloyd-Max levels of the unit half-normal times a per-layer scale (1 until
    :func:`~torchslim.quant.calibrate.calibrate_act_scales` fits it on data).  A stochastic quantizer samples in
    training mode and is deterministic in eval mode.
    """

    def __init__(self, method: str = "hwgq", bits: int = 2):
        super().__init__()
        self.quantizer = get_act_quantizer(method, bits)
        self.method, self.bits = method, int(bits)
        levels, thresholds = self.quantizer.levels_fn(self.bits)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))
        self.lo, self.hi = self.quantizer.grad_range(levels)

    def unit_levels(self) -> tuple[list[float], list[float]]:
        """The quantizer's own (unscaled) levels and thresholds."""
        return self.quantizer.levels_fn(self.bits)

    def set_scale(self, scale: float) -> None:
        """Use ``scale * levels`` and ``scale * thresholds`` of the unit shape (zero-anchored quantizers)."""
        if not self.quantizer.needs_bn or not scale > 0:
            raise ValueError(f"{self.method} levels cannot be scaled by {scale!r}")
        levels, thresholds = self.unit_levels()
        self.levels.copy_(torch.tensor(levels, dtype=torch.float64) * scale)
        self.thresholds.copy_(torch.tensor(thresholds, dtype=torch.float64) * scale)
        self._refresh_range()

    def _refresh_range(self) -> None:
        self.lo, self.hi = self.quantizer.grad_range([float(v) for v in self.levels])

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_range()  # calibrated levels come with the state

    def forward(self, x):
        if self.training and self.quantizer.stochastic:
            return qf.stochastic_sign(x)
        if self.training and self.quantizer.surrogate is not None:
            return self.quantizer.surrogate(x)
        return qf.quantize_levels(x, self.levels, self.thresholds, self.quantizer.ties_up, self.lo, self.hi)

    def codes(self, x) -> torch.Tensor:
        """Integer level indices of ``x`` (0 .. len(levels) - 1)."""
        return torch.bucketize(x, self.thresholds.to(x.dtype), right=self.quantizer.ties_up)

    def get_config(self) -> dict:
        return {"method": self.method, "bits": self.bits}

    def extra_repr(self) -> str:
        return f"method={self.method}, bits={self.bits}"


FROZEN_LAYERS = (FrozenConv2d, FrozenLinear)
for _frozen in FROZEN_LAYERS:
    BN_FOLDS.register(_frozen, fold_into_scale)

QUANT_WEIGHT_LAYERS = (QuantConv2d, QuantLinear, *FROZEN_LAYERS)  # the layers holding quantized weights
QUANT_LAYERS = (*QUANT_WEIGHT_LAYERS, ActQuant)


def has_quantized_weights(model: nn.Module) -> bool:
    """True when a layer of ``model`` holds quantized weights (quantization-aware or frozen)."""
    return any(isinstance(m, QUANT_WEIGHT_LAYERS) for m in model.modules())


class QuantTracer(fx.Tracer):
    """``torch.fx`` tracer that keeps the quantized layers as single (leaf) modules."""

    def is_leaf_module(self, module, qualname):
        return isinstance(module, QUANT_LAYERS) or super().is_leaf_module(module, qualname)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx`` trace that keeps the quantized layers as single (leaf) modules."""
    return fx.GraphModule(model, QuantTracer().trace(model))
