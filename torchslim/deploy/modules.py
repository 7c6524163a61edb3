"""Layers whose binary weights stay bit-packed in memory and run on the native kernels.

A packed layer takes the *quantized* activations produced by the preceding
activation quantizer (values in a known, finite level set), packs them, and runs
the xnor/and-popcount convolution.  Levels ``{-1, +1}`` use sign mode; levels
``0 = L0 < L1 < ...`` use thermometer planes with steps ``L(k+1) - Lk``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..io import register_module_type
from .build import native_library
from .kernels import binary_conv2d, pack_weight_codes, reference_binary_conv2d, words_for


def plane_encoding(levels) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(thresholds, steps) for an activation level set; (None, None) for sign mode.

    Thresholds are midpoints between levels: inputs are already quantized, so any
    value strictly between two levels separates them exactly.
    """
    levels = [float(v) for v in levels]
    if levels == [-1.0, 1.0]:
        return None, None
    if levels[0] != 0.0 or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels {levels} are neither {{-1, +1}} nor 0 = L0 < L1 < ...")
    thresholds = torch.tensor([(a + b) / 2 for a, b in zip(levels, levels[1:])], dtype=torch.float32)
    steps = torch.tensor([b - a for a, b in zip(levels, levels[1:])], dtype=torch.float32)
    return thresholds, steps


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


@register_module_type
class PackedBinaryConv2d(nn.Module):
    """``y = scale * conv(Q(x), B) + bias`` with B in {-1,+1} stored 1 bit per weight."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 levels=(-1.0, 1.0)):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.levels = [float(v) for v in levels]
        thresholds, steps = plane_encoding(self.levels)
        kh, kw = self.kernel_size
        self.register_buffer("weight_bits", torch.zeros(out_channels, kh, kw, words_for(in_channels),
                                                        dtype=torch.int64))
        self.register_buffer("weight_pops", torch.zeros(out_channels, kh * kw, dtype=torch.int32))
        self.register_buffer("scale", torch.ones(out_channels))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)
        self.register_buffer("thresholds", thresholds, persistent=False)
        self.register_buffer("steps", steps, persistent=False)
        self.threads = None  # None: torch.get_num_threads() at call time

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale, bias, stride, padding, levels) -> "PackedBinaryConv2d":
        out_channels, in_channels, kh, kw = codes.shape
        layer = cls(in_channels, out_channels, (kh, kw), stride, padding, bias is not None, levels)
        layer.set_codes(codes, scale, bias)
        return layer

    def set_codes(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        if not bool(((codes == 1) | (codes == -1)).all()):
            raise ValueError("binary layers need weight codes in {-1, +1}")
        bits, pops = pack_weight_codes(codes)
        self.weight_bits.copy_(bits)
        self.weight_pops.copy_(pops)
        self.scale.copy_(scale.detach().reshape(-1))
        if bias is not None:
            self.bias.copy_(bias.detach().reshape(-1))

    def codes(self) -> torch.Tensor:
        """The {-1,+1} weight codes [OC, C, KH, KW], unpacked (for the reference path and checks)."""
        shifts = torch.arange(64, dtype=torch.int64)
        bits = (self.weight_bits.unsqueeze(-1) >> shifts) & 1  # [OC, KH, KW, words, 64]
        bits = bits.flatten(-2)[..., : self.in_channels].permute(0, 3, 1, 2)
        return (1 - 2 * bits).to(torch.int8)

    def packed_bytes(self) -> int:
        """Bytes the weights occupy in memory (bits + per-channel scale and bias)."""
        extra = self.scale.numel() * 4 + (0 if self.bias is None else self.bias.numel() * 4)
        return self.weight_bits.numel() * 8 + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native_library() is None or x.device.type != "cpu" or x.dtype != torch.float32:
            return reference_binary_conv2d(x, self.codes(), self.scale, self.bias, self.stride, self.padding,
                                           self.thresholds, self.steps)
        threads = self.threads or torch.get_num_threads()
        return binary_conv2d(x, self.weight_bits, self.weight_pops, self.in_channels, self.scale, self.bias,
                             self.stride, self.padding, self.thresholds, self.steps, threads)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "bias": self.bias is not None, "levels": self.levels}

    def extra_repr(self) -> str:
        mode = "sign" if self.thresholds is None else f"{self.thresholds.numel()} planes"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, {mode}")


@register_module_type
class PackedBinaryLinear(PackedBinaryConv2d):
    """A binary fully connected layer: the 1x1 case of :class:`PackedBinaryConv2d`."""

    def __init__(self, in_features, out_features, bias=True, levels=(-1.0, 1.0)):
        super().__init__(in_features, out_features, 1, 1, 0, bias, levels)

    @classmethod
    def from_codes(cls, codes, scale, bias, levels):  # noqa: D102 - codes [OUT, IN]
        layer = cls(codes.shape[1], codes.shape[0], bias is not None, levels)
        layer.set_codes(codes[:, :, None, None], scale, bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, None, None]).flatten(1)

    def get_config(self) -> dict:
        return {"in_features": self.in_channels, "out_features": self.out_channels, "bias": self.bias is not None,
                "levels": self.levels}
