"""Python side of the bit-packed kernels, and the PyTorch reference they must match exactly.

Layouts (64 channels per word; words are stored in int64 tensors):
  activations  [N, H, W, words]            sign mode, bit set where x < 0
               [N, H, W, planes, words]    plane mode, plane k set where x >= threshold[k]
  weights      [OC, KH, KW, words]         bit set where the code is -1
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from .build import native_library

WORD_BITS = 64


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _check_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("binary kernels take float32 CPU tensors")
    return x.contiguous()


def pack_weight_codes(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """{-1,+1} codes [OC, C, KH, KW] -> (packed bits [OC, KH, KW, words], per-tap popcounts [OC, KH*KW])."""
    codes = codes.to(torch.int8).contiguous()
    oc, c, kh, kw = codes.shape
    words = words_for(c)
    lib = native_library()
    if lib is not None:
        bits = torch.empty(oc, kh, kw, words, dtype=torch.int64)
        lib.bk_pack_weights(_ptr(codes), oc, c, kh, kw, words, _ptr(bits))
    else:
        bits = _pack_bool_reference((codes < 0).permute(0, 2, 3, 1))
    pops = (codes < 0).sum(dim=1).reshape(oc, kh * kw).to(torch.int32)
    return bits, pops


def _pack_bool_reference(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor [..., C] along its last axis into int64 words [..., words]."""
    channels = mask.shape[-1]
    words = words_for(channels)
    padded = torch.zeros(*mask.shape[:-1], words * WORD_BITS, dtype=torch.bool)
    padded[..., :channels] = mask
    chunks = padded.reshape(*mask.shape[:-1], words, WORD_BITS).to(torch.int64)
    weights = torch.ones(WORD_BITS, dtype=torch.int64) << torch.arange(WORD_BITS)  # bit 63 wraps to the sign bit
    return (chunks * weights).sum(-1)


def pack_signs(x: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """float NCHW -> sign bits [N, H, W, words] (bit = 1 where x < 0)."""
    x = _check_float(x)
    n, c, h, w = x.shape
    words = words_for(c)
    lib = native_library()
    if lib is None:
        return _pack_bool_reference((x < 0).permute(0, 2, 3, 1))
    out = torch.empty(n, h, w, words, dtype=torch.int64)
    lib.bk_pack_signs(_ptr(x), n, c, h, w, words, _ptr(out), int(threads))
    return out


def pack_planes(x: torch.Tensor, thresholds: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """float NCHW -> thermometer planes [N, H, W, planes, words] (plane k = x >= thresholds[k])."""
    x = _check_float(x)
    thresholds = thresholds.to(torch.float32).contiguous()
    n, c, h, w = x.shape
    words, planes = words_for(c), thresholds.numel()
    lib = native_library()
    if lib is None:
        mask = x[:, None] >= thresholds.view(1, -1, 1, 1, 1)  # [N, P, C, H, W]
        return _pack_bool_reference(mask.permute(0, 3, 4, 1, 2))
    out = torch.empty(n, h, w, planes, words, dtype=torch.int64)
    lib.bk_pack_planes(_ptr(x), n, c, h, w, words, _ptr(thresholds), planes, _ptr(out), int(threads))
    return out


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def binary_conv2d(x: torch.Tensor, weight_bits: torch.Tensor, weight_pops: torch.Tensor, in_channels: int,
                  scale: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
                  thresholds: torch.Tensor | None = None, steps: torch.Tensor | None = None,
                  threads: int = 1) -> torch.Tensor:
    """Native binary conv of float input ``x`` (quantized and packed here); float NCHW output.

    Sign mode when ``thresholds`` is None (x -> sign(x), sign(0) = +1), else plane mode
    (x -> sum_k steps[k] * [x >= thresholds[k]]).  Needs the native library.
    """
    lib = native_library()
    n, _, h, w = x.shape
    oc, kh, kw, words = weight_bits.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    if thresholds is None:
        xbits, planes, steps_ptr = pack_signs(x, threads), 1, None
    else:
        xbits, planes = pack_planes(x, thresholds, threads), thresholds.numel()
        steps = steps.to(torch.float32).contiguous()
        steps_ptr = _ptr(steps)
    scale = scale.to(torch.float32).contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()
    out = torch.empty(n, oc, oh, ow, dtype=torch.float32)
    lib.bk_conv2d(_ptr(xbits), n, h, w, words, planes, steps_ptr, in_channels, _ptr(weight_bits),
                  _ptr(weight_pops), oc, kh, kw, stride[0], stride[1], padding[0], padding[1], _ptr(scale),
                  _ptr(bias), _ptr(out), oh, ow, int(threads))
    return out


def reference_binary_conv2d(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                            stride=(1, 1), padding=(0, 0), thresholds: torch.Tensor | None = None,
                            steps: torch.Tensor | None = None) -> torch.Tensor:
    """The float simulation the kernels reproduce bit for bit.

    Convolutions of {-1,+1} or {0,1} tensors with {-1,+1} weights sum small integers,
    which float32 represents exactly; the float epilogue runs in the same order as
    the native code.
    """
    weight = codes.to(torch.float32)
    if thresholds is None:
        values = F.conv2d(torch.where(x < 0, -1.0, 1.0), weight, stride=stride, padding=padding)
    else:
        values = None
        for k in range(thresholds.numel()):
            plane = (x >= thresholds[k]).to(torch.float32)
            term = steps[k].to(torch.float32) * F.conv2d(plane, weight, stride=stride, padding=padding)
            values = term if values is None else values + term
    out = values * scale.to(torch.float32).view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.to(torch.float32).view(1, -1, 1, 1)
    return out
