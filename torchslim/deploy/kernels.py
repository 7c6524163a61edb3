"""Python side of the bit-packed kernels, and the PyTorch reference they must match exactly.

Layouts (64 channels per word; words are stored in int64 tensors):
  activations  [N, H, W, words]            sign mode, bit set where x < 0
               [N, P, H, W, words]         plane mode, plane k set where x >= threshold[k] (thermometer), or
                                           binary-weighted: plane j holds bit j of the level index
                                           (a fused layer's packed output uses this form, P = 1 in sign mode)
  weights      [OC, KH, KW, words]         bit set where the code is -1
  tiled        [ceil(OC/8), KH*KW*words, 8] what the micro-kernel reads: 8 channels side by side
"""

from __future__ import annotations

import ctypes
import threading

import torch
import torch.nn.functional as F

from .build import native_library

WORD_BITS = 64
TILE = 8
MAX_NATIVE_PLANES = 16


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _check_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("binary kernels take float32 CPU tensors")
    return x.contiguous()


class ConvDesc(ctypes.Structure):
    """Mirror of ``bk_conv_desc`` in csrc/bitkernels.c (same field order)."""

    _fields_ = [(name, ctypes.c_int64) for name in (
        "n", "h", "w", "words", "planes", "c_true", "oc", "kh", "kw", "sh", "sw", "ph", "pw", "oh", "ow",
        "pool", "out_planes", "out_sign", "threads")] + [(name, ctypes.c_void_p) for name in (
        "x", "steps", "wt", "wpre", "scale", "bias", "out", "thr", "sgn", "out_bits", "xf", "in_thr")] + [
        ("in_cmp", ctypes.c_int64), ("levels", ctypes.c_void_p), ("in_binary", ctypes.c_int64),
        ("out_binary", ctypes.c_int64), ("in_sgn", ctypes.c_void_p), ("ithr", ctypes.c_void_p),
        ("res", ctypes.c_int64), ("res_pool", ctypes.c_int64), ("act_b_in", ctypes.c_void_p),
        ("act_slope", ctypes.c_void_p), ("act_b_out", ctypes.c_void_p), ("fpool", ctypes.c_int64)]


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


def tile_weights(weight_bits: torch.Tensor) -> torch.Tensor:
    """[OC, KH, KW, words] -> [ceil(OC/8), KH*KW*words, 8], zero channels padding the last tile."""
    oc = weight_bits.shape[0]
    flat = weight_bits.reshape(oc, -1)
    tiles = (oc + TILE - 1) // TILE
    padded = torch.zeros(tiles * TILE, flat.shape[1], dtype=torch.int64)
    padded[:oc] = flat
    return padded.view(tiles, TILE, -1).transpose(1, 2).contiguous()


def pop_prefix(weight_pops: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Per-tap weight popcounts [OC, KH*KW] -> 2D prefix sums [KH+1, KW+1, OCP] (border correction)."""
    oc = weight_pops.shape[0]
    pre = torch.zeros(kh + 1, kw + 1, _tiled(oc), dtype=torch.int32)
    sums = weight_pops.reshape(oc, kh, kw).to(torch.int64).cumsum(1).cumsum(2).to(torch.int32)
    pre[1:, 1:, :oc] = sums.permute(1, 2, 0)
    return pre.contiguous()


def _tiled(channels: int) -> int:
    return (channels + TILE - 1) // TILE * TILE


def _padded(values: torch.Tensor | None, fill: float = 0.0) -> torch.Tensor | None:
    """Per-channel float32 values along the last axis, padded to whole tiles (the kernel reads all 8 lanes)."""
    if values is None:
        return None
    values = values.to(torch.float32)
    out = torch.full((*values.shape[:-1], _tiled(values.shape[-1])), fill, dtype=torch.float32)
    out[..., : values.shape[-1]] = values
    return out.contiguous()


def _pack_bool_reference(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor [..., C] along its last axis into int64 words [..., words]."""
    channels = mask.shape[-1]
    words = words_for(channels)
    padded = torch.zeros(*mask.shape[:-1], words * WORD_BITS, dtype=torch.bool)
    padded[..., :channels] = mask
    chunks = padded.reshape(*mask.shape[:-1], words, WORD_BITS).to(torch.int64)
    weights = torch.ones(WORD_BITS, dtype=torch.int64) << torch.arange(WORD_BITS)  # bit 63 wraps to the sign bit
    return (chunks * weights).sum(-1)


def unpack_bits(bits: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`_pack_bool_reference`: int64 words [..., words] -> bool [..., channels]."""
    shifts = torch.arange(WORD_BITS, dtype=torch.int64)
    return (((bits.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :channels]).bool()


def pack_activation_signs(x: torch.Tensor, threads: int = 1) -> torch.Tensor:
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


# How pack_quantized compares x with each threshold (mirrors the CMP_* codes of the C source).
COMPARE = {"lt": 0, "ge": 1, "gt": 2, "not_ge": 3, "not_gt": 4}
_TORCH_COMPARE = {"lt": lambda x, t: x < t, "ge": lambda x, t: x >= t, "gt": lambda x, t: x > t,
                  "not_ge": lambda x, t: ~(x >= t), "not_gt": lambda x, t: ~(x > t)}


def binary_planes(thresholds: int) -> int:
    """Binary-weighted planes that hold the level index of ``thresholds`` (2^k - 1) thresholds: k."""
    return int(thresholds).bit_length()


def therm_to_binary(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Nested thermometer bits along ``dim`` -> the bits of their count (plane j = bit j)."""
    count = mask.to(torch.int64).sum(dim, keepdim=True)
    shifts = torch.arange(binary_planes(mask.shape[dim]), dtype=torch.int64)
    shape = [1] * mask.dim()
    shape[dim] = -1
    return ((count >> shifts.view(shape)) & 1).bool()


def pack_quantized(x: torch.Tensor, thresholds: torch.Tensor, compare: str = "ge", threads: int = 1,
                   binary: bool = False) -> torch.Tensor:
    """float NCHW -> planes [N, P, H, W, words], plane k set where ``compare(x, thresholds[k])``.

    ``ge`` / ``gt`` give thermometer planes (ties going up / down); ``not_ge`` / ``not_gt``
    with one threshold give sign bits straight from a sign quantizer's input.  With
    ``binary`` (2^k - 1 thresholds), P = k and plane j holds bit j of the number of
    thresholds that hold (the level index).
    """
    x = _check_float(x)
    thresholds = thresholds.to(torch.float32).contiguous()
    n, c, h, w = x.shape
    words, count = words_for(c), thresholds.numel()
    planes = binary_planes(count) if binary else count
    lib = native_library()
    if lib is None or count > MAX_NATIVE_PLANES:
        mask = _TORCH_COMPARE[compare](x[:, None], thresholds.view(1, -1, 1, 1, 1))  # [N, P, C, H, W]
        if binary:
            mask = therm_to_binary(mask, 1)
        return _pack_bool_reference(mask.permute(0, 1, 3, 4, 2))
    out = torch.empty(n, planes, h, w, words, dtype=torch.int64)
    lib.bk_pack(_ptr(x), n, c, h, w, words, _ptr(thresholds), count, COMPARE[compare], int(binary), _ptr(out),
                int(threads))
    return out


def pack_planes(x: torch.Tensor, thresholds: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """float NCHW -> thermometer planes [N, P, H, W, words] (plane k = x >= thresholds[k])."""
    return pack_quantized(x, thresholds, "ge", threads)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvKernel:
    """One binary conv ready to run natively: weights tiled once, epilogue fixed.

    Float epilogue: ``y = v * scale + bias`` (NCHW float).  Packed epilogue (when
    ``out_thresholds`` [Q, OC] and ``out_sgn`` [OC] are given): the next layer's
    packed input, plane k set where ``sgn * v >= thresholds[k]`` (in sign mode
    ``out_sign``: bit set where level 0 is kept), max-pooled over ``pool`` x ``pool``;
    with ``out_binary`` the planes are instead the bits of the number of thresholds reached.
    ``binary``: the input planes are binary-weighted, ``steps`` = D * 2^j.
    """

    def __init__(self, weight_bits, weight_pops, in_channels, scale, bias, stride=(1, 1), padding=(0, 0),
                 steps=None, out_thresholds=None, out_sgn=None, out_sign=False, pool=1, out_values=None,
                 binary=False, out_binary=False):
        self.oc, self.kh, self.kw, self.words = weight_bits.shape
        self.wt = tile_weights(weight_bits)
        self.wpre = pop_prefix(weight_pops, self.kh, self.kw)
        self.steps = None if steps is None else steps.to(torch.float32).contiguous()
        self.planes = 1 if steps is None else self.steps.numel()
        self.scale, self.bias = _padded(scale), _padded(bias)
        self.thr, self.sgn = _padded(out_thresholds, float("inf")), _padded(out_sgn, 1.0)
        self.out_planes = 0 if self.thr is None else self.thr.shape[0]  # thresholds
        self.out_binary = bool(out_binary) and self.out_planes > 0 and out_values is None
        self.packed_planes = binary_planes(self.out_planes) if self.out_binary else self.out_planes
        # with out_values (the levels), the packed epilogue emits levels[planes reached] as floats
        self.out_values = None if out_values is None else out_values.to(torch.float32).contiguous()
        self.packed_output = bool(self.out_planes) and self.out_values is None  # bits for the next layer
        self.pool = int(pool)
        self.stride, self.padding = tuple(stride), tuple(padding)
        d = self.desc = ConvDesc()
        d.words, d.planes, d.c_true, d.oc, d.kh, d.kw = self.words, self.planes, in_channels, self.oc, self.kh, self.kw
        d.sh, d.sw, d.ph, d.pw = *self.stride, *self.padding
        d.pool, d.out_planes, d.out_sign = self.pool, self.out_planes, int(bool(out_sign))
        d.steps, d.wt, d.wpre = _ptr(self.steps), _ptr(self.wt), _ptr(self.wpre)
        d.scale, d.bias, d.thr, d.sgn = _ptr(self.scale), _ptr(self.bias), _ptr(self.thr), _ptr(self.sgn)
        d.levels = _ptr(self.out_values)
        d.in_binary, d.out_binary = int(bool(binary)), int(self.out_binary)
        self.lib = native_library()
        if self.lib.bk_conv_desc_size() != ctypes.sizeof(ConvDesc):
            raise RuntimeError("torchslim: the native conv descriptor does not match its Python mirror")
        # the packed epilogue's thresholds on the exact integer sums, where the values are such sums
        self.ithr = torch.empty(self.out_planes, self.thr.shape[1], dtype=torch.int32) if self.out_planes else None
        if self.ithr is not None and self.lib.bk_int_thresholds(ctypes.addressof(d), _ptr(self.ithr)):
            d.ithr = _ptr(self.ithr)
        d.res_pool = d.fpool = 1
        self.residual, self.fpool = None, 1  # see set_residual
        self._run, self.in_thr = self.lib.bk_conv, None
        # each calling thread fills a copy of the descriptor: the call's pointers and shapes
        # must not be overwritten by another thread while the native code runs without the GIL
        self._calls, self._version = threading.local(), 0

    def set_input_packing(self, thresholds: torch.Tensor, compare: str, sgn: torch.Tensor | None = None) -> None:
        """Let :meth:`__call__` take float NCHW input, packed natively as by :func:`pack_quantized`.

        ``thresholds``: [Q] for every channel, or [Q, C] per channel; with ``sgn`` [C] (+-1)
        channel c compares ``sgn[c] * x`` (a folded BatchNorm with a negative scale)."""
        c = self.desc.c_true
        thresholds = thresholds.to(torch.float32).reshape(thresholds.shape[0], -1)
        self.in_thr = thresholds.expand(-1, c).contiguous()
        self.in_sgn = None if sgn is None else sgn.to(torch.float32).reshape(c).contiguous()
        self.desc.in_thr, self.desc.in_cmp, self.desc.in_sgn = _ptr(self.in_thr), COMPARE[compare], _ptr(self.in_sgn)
        self._version += 1  # threads take a fresh copy of the descriptor

    def set_residual(self, res_pool: int | None, bias_in=None, slope=None, bias_out=None, fpool: int = 1) -> None:
        """The residual epilogue of a float-output kernel with float input (see ``residual_item`` in the C
        source): ``maxpool_fpool(bias_out + prelu(bias_in + (v + shortcut(x))))``, the shortcut being the
        input ``x`` average-pooled by ``res_pool`` with zero channels appended (None: no shortcut); each of
        ``bias_in`` / ``slope`` (PReLU) / ``bias_out`` ([OC]) may be None."""
        if self.out_planes:
            raise ValueError("the residual epilogue needs the float epilogue")
        d = self.desc
        self.act = [None if t is None else _padded(t.reshape(-1).expand(self.oc)) for t in (bias_in, slope, bias_out)]
        d.act_b_in, d.act_slope, d.act_b_out = [_ptr(t) for t in self.act]
        d.res, d.res_pool, d.fpool = int(res_pool is not None), int(res_pool or 1), int(fpool)
        self.residual, self.fpool = res_pool, int(fpool)
        self._version += 1

    def __call__(self, x: torch.Tensor, threads: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
        """Packed input ([N, H, W, words] or [N, P, H, W, words]), or float NCHW input after
        :meth:`set_input_packing` -> float NCHW or packed output (into ``out`` when it has the
        output's shape and dtype, else a new tensor).

        Per call the Python side only compares the input's shape with the last one and
        updates pointers (a layer of 0.3 ms spent 7% of it here before)."""
        call = getattr(self._calls, "state", None)
        if call is None or call.version != self._version:
            call = self._calls.state = _CallState(ConvDesc.from_buffer_copy(self.desc), self._version)
        d = call.desc
        shape = x.shape
        floats = x.dtype == torch.float32
        if shape != call.last or floats is not call.floats:
            self._prepare(call, shape, floats)
        if threads != call.threads:
            d.threads = call.threads = threads
        if floats:
            x = x.contiguous()
            d.xf = x.data_ptr()
        else:
            d.x = x.data_ptr()
        if out is None or out.dtype != call.out_dtype or out.shape != call.out_shape or not out.is_contiguous():
            out = torch.empty(*call.out_shape, dtype=call.out_dtype)
        if self.packed_output:
            d.out_bits = out.data_ptr()
        else:
            d.out = out.data_ptr()
        if self._run(call.addr) != 0:
            raise MemoryError("torchslim: the binary conv kernel could not allocate its scratch memory")
        return out

    def _prepare(self, call: "_CallState", shape, floats: bool) -> None:
        """Fill the calling thread's descriptor for a new input shape or kind."""
        d = call.desc
        if floats:
            n, c, h, w = shape
            if self.in_thr is None or c != d.c_true:
                raise ValueError("float input needs set_input_packing() and the layer's channel count")
        else:
            n, h, w = shape[0], shape[-3], shape[-2]
        oh = conv_output_size(h, self.kh, self.stride[0], self.padding[0])
        ow = conv_output_size(w, self.kw, self.stride[1], self.padding[1])
        d.n, d.h, d.w, d.oh, d.ow = n, h, w, oh, ow
        if self.out_values is not None:
            call.out_shape = (n, self.oc, oh // self.pool, ow // self.pool)
        elif self.out_planes:
            call.out_shape = (n, self.packed_planes, oh // self.pool, ow // self.pool, words_for(self.oc))
        else:
            call.out_shape = (n, self.oc, oh // self.fpool, ow // self.fpool)
        if self.residual is not None and (not floats or c > self.oc or (h // self.residual, w // self.residual) != (oh, ow)):
            raise ValueError(f"the residual of a {tuple(shape)} input does not fit the output ({self.oc}, {oh}, {ow})")
        call.out_dtype = torch.int64 if self.packed_output else torch.float32
        d.xf = d.x = None  # the pointer of the other input kind stays unset
        call.last, call.floats = shape, floats


class _CallState:
    """One calling thread's descriptor copy and the shapes it was last filled for."""

    __slots__ = ("addr", "desc", "floats", "last", "out_dtype", "out_shape", "threads", "version")

    def __init__(self, desc: ConvDesc, version: int):
        self.desc, self.addr, self.version = desc, ctypes.addressof(desc), version
        self.last = self.out_shape = self.out_dtype = self.floats = self.threads = None


class KernelChain:
    """Consecutive kernels, each taking the previous one's output (packed planes, or the float values of
    a residual unit that the next kernel packs), run by one native call.

    The packed activations between them live in buffers kept per calling thread and
    input shape; only the last output is a new tensor.  Each call then costs one
    ctypes call instead of one per layer (one per chain took a vgg14 forward from about 0.95
    to 0.92 ms at 2 threads).
    """

    def __init__(self, kernels: list):
        if any(not (k.packed_output or (k.out_values is None and n.in_thr is not None))
               for k, n in zip(kernels, kernels[1:])):
            raise ValueError("each kernel of a chain but the last must emit the next one's input: packed planes, "
                             "or float values the next one packs")
        self.kernels = list(kernels)
        self._calls = threading.local()

    def __call__(self, x: torch.Tensor, threads: list) -> torch.Tensor:
        key = (x.shape, x.dtype, tuple(threads), tuple(k._version for k in self.kernels))
        state = getattr(self._calls, "state", None)
        if state is None or state[0] != key:
            state = self._calls.state = (key, *self._bind(x, threads))
        _, calls, array, out_shape, out_dtype, _buffers = state
        first, last = calls[0].desc, calls[-1].desc
        x = x.contiguous()
        if calls[0].floats:
            first.xf = x.data_ptr()
        else:
            first.x = x.data_ptr()
        out = torch.empty(*out_shape, dtype=out_dtype)
        if self.kernels[-1].packed_output:
            last.out_bits = out.data_ptr()
        else:
            last.out = out.data_ptr()
        failed = self.kernels[0].lib.bk_conv_chain(array, len(calls))
        if failed != 0:
            raise MemoryError("torchslim: the binary conv kernel could not allocate its scratch memory")
        return out

    def _bind(self, x: torch.Tensor, threads: list) -> tuple:
        """Descriptors for this thread and input shape, wired output to input through kept buffers."""
        calls, buffers = [], []
        shape, floats = x.shape, x.dtype == torch.float32
        for i, (kernel, count) in enumerate(zip(self.kernels, threads)):
            call = _CallState(ConvDesc.from_buffer_copy(kernel.desc), kernel._version)
            kernel._prepare(call, shape, floats)
            call.desc.threads = call.threads = int(count)
            if calls and floats:  # a float link: the previous kernel's values are this one's input
                call.desc.xf = buffers[-1].data_ptr()
            elif calls:
                call.desc.x = buffers[-1].data_ptr()
            if i + 1 < len(self.kernels):
                buffers.append(torch.empty(*call.out_shape, dtype=call.out_dtype))
                if kernel.packed_output:
                    call.desc.out_bits = buffers[-1].data_ptr()
                else:
                    call.desc.out = buffers[-1].data_ptr()
            calls.append(call)
            shape, floats = call.out_shape, not kernel.packed_output
        array = (ctypes.c_void_p * len(calls))(*[call.addr for call in calls])
        return calls, array, calls[-1].out_shape, calls[-1].out_dtype, buffers


def binary_conv2d(x: torch.Tensor, weight_bits: torch.Tensor, weight_pops: torch.Tensor, in_channels: int,
                  scale: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
                  thresholds: torch.Tensor | None = None, steps: torch.Tensor | None = None,
                  threads: int = 1, binary: bool = False) -> torch.Tensor:
    """Native binary conv of float input ``x`` (quantized and packed here); float NCHW output.

    Sign mode when ``thresholds`` is None (x -> sign(x), sign(0) = +1), else plane mode
    (x -> sum_k steps[k] * [x >= thresholds[k]]), or with ``binary`` binary-weighted
    planes (x -> steps[0] * m, m = #{k : x >= thresholds[k]}).  Needs the native library.
    """
    kernel = ConvKernel(weight_bits, weight_pops, in_channels, scale, bias, stride, padding,
                        None if thresholds is None else steps, binary=binary and thresholds is not None)
    if thresholds is None:
        kernel.set_input_packing(torch.zeros(1), "lt")
    else:
        kernel.set_input_packing(thresholds, "ge")
    return kernel(_check_float(x), threads)


def reference_binary_conv2d(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                            stride=(1, 1), padding=(0, 0), thresholds: torch.Tensor | None = None,
                            steps: torch.Tensor | None = None, binary: bool = False) -> torch.Tensor:
    """The float simulation the kernels reproduce bit for bit.

    Convolutions of {-1,+1} or {0,1} tensors (or of level indices 0..2^k - 1 in
    binary-weighted mode) with {-1,+1} weights sum small integers, which float32
    represents exactly; the float epilogue runs in the same order as the native code.
    """
    weight = codes.to(torch.float32)
    if thresholds is None:
        values = F.conv2d(torch.where(x < 0, -1.0, 1.0), weight, stride=stride, padding=padding)
    elif binary:  # D * conv(level index): one rounding of an exact integer sum
        index = (x[:, None] >= thresholds.view(1, -1, 1, 1, 1)).sum(1).to(torch.float32)
        values = steps[0].to(torch.float32) * F.conv2d(index, weight, stride=stride, padding=padding)
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
