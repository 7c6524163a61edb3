"""Layers whose binary weights stay bit-packed in memory and run on the native kernels.

A packed layer takes the *quantized* activations produced by the preceding
activation quantizer (values in a known, finite level set), packs them, and runs
the xnor/and-popcount convolution.  Levels ``{-1, +1}`` use sign mode; evenly
spaced levels ``D * {0, 1, ..., 2^k - 1}`` (k >= 2, e.g. DoReFa) use k
binary-weighted planes holding the bits of the level index; other levels
``0 = L0 < L1 < ...`` use thermometer planes with steps ``L(k+1) - Lk``.

``compile`` may also fold the activation quantizer in front of a layer, and a
BatchNorm before it, into its packing (``in_thresholds`` [Q] or per channel [Q, C],
``in_compare``, ``in_sgn``: the layer then takes the float input of the BatchNorm or
quantizer), and chain packed layers: a layer with ``out_levels`` emits the next
layer's packed input directly (its scale, BatchNorm and activation quantizer folded
into per-channel thresholds, then an optional max pool), and the next layer, with
``packed_input``, consumes it without a float round trip.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from ..io import register_module_type
from ..nn import pair as _pair
from .build import native_library
from .kernels import (_TORCH_COMPARE, MAX_NATIVE_PLANES, ConvKernel, KernelChain, _pack_bool_reference,
                      binary_planes, pack_weight_codes, reference_binary_conv2d, therm_to_binary, unpack_bits, words_for)
from .lowering import RuntimeLayer

# Levels count as D * i when every level is within this fraction of the top level of D * i:
# float32 rounding of i / n (DoReFa) stays far below it.
_EVEN_TOLERANCE = 2.0 ** -20


_CALL = threading.local()  # kernel threads chosen for the model call in progress (see compile.ThreadPolicy)


def kernel_threads() -> int:
    """Threads for the packed kernels when a layer has none of its own: the compiled model's
    call in progress decides (it may have lowered torch's count for its float layers), else torch's count."""
    return getattr(_CALL, "threads", None) or torch.get_num_threads()


def wake_kernel_threads(threads: int) -> None:
    """Wake the native kernels' workers ahead of a call's first binary layer (nothing without them)."""
    lib = native_library()
    if lib is not None:
        lib.bk_pool_wake(int(threads))


def set_call_threads(threads: int | None) -> int | None:
    """Set the kernel threads of the calling thread's model call; returns the previous value."""
    previous = getattr(_CALL, "threads", None)
    _CALL.threads = threads
    return previous


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


def binary_step(levels) -> float | None:
    """The step D when ``levels`` are D * {0, 1, ..., 2^k - 1} with k >= 2 (up to float32 rounding), else None.

    Such levels pack as k binary-weighted planes (the bits of the level index)
    instead of 2^k - 1 thermometer planes.
    """
    levels = [float(v) for v in levels]
    count = len(levels)
    if count < 4 or count & (count - 1) or levels[0] != 0.0 or levels[-1] <= 0.0:
        return None
    step = levels[-1] / (count - 1)
    if any(abs(v - step * i) > _EVEN_TOLERANCE * levels[-1] for i, v in enumerate(levels)):
        return None
    return float(torch.tensor(step, dtype=torch.float32))


def level_encoding(levels) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
    """(thresholds, steps, binary) of a level set.

    Thermometer planes (``binary`` False): plane k is ``x >= thresholds[k]`` with weight
    ``steps[k]``.  Binary-weighted planes: plane j is bit j of the level index (the
    number of thresholds reached), with weight ``steps[j] = D * 2^j``.  Sign mode:
    (None, None, False).
    """
    thresholds, steps = plane_encoding(levels)
    step = binary_step(levels)
    if thresholds is None or step is None:
        return thresholds, steps, False
    planes = binary_planes(thresholds.numel())
    return thresholds, step * torch.pow(2.0, torch.arange(planes, dtype=torch.float32)), True


def threshold_count(levels) -> int:
    """Thresholds of a level set (1 in sign mode): the rows of a fused layer's ``out_thresholds``."""
    return max(len(levels) - 1, 1)


def encoded_planes(levels) -> int:
    """Packed planes of a level set: 1 in sign mode, k for binary-weighted levels, else one per threshold."""
    thresholds, steps, _ = level_encoding(levels)
    return 1 if thresholds is None else steps.numel()


@register_module_type
class PackedBinaryConv2d(RuntimeLayer):
    """``y = scale * conv(Q(x), B) + bias`` with B in {-1,+1} stored 1 bit per weight.

    With ``out_levels`` the output is instead the next layer's packed input: plane k
    is set where ``out_sgn * v >= out_thresholds[k]`` (v the integer-exact conv
    value before ``scale``), max-pooled over ``out_pool`` x ``out_pool`` windows; with
    ``out_values`` too, it is ``out_levels[planes set]`` as a float NCHW tensor.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 levels=(-1.0, 1.0), packed_input=False, out_levels=None, out_pool=1, in_thresholds=None,
                 in_compare=None, out_values=False, in_sgn=None, residual_pool=None, residual_act=(),
                 float_pool=1):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.levels = [float(v) for v in levels]
        self.packed_input = bool(packed_input)
        self.out_levels = None if out_levels is None else [float(v) for v in out_levels]
        self.out_pool = int(out_pool)
        self.out_values = bool(out_values)
        self.in_compare = in_compare
        thresholds, steps, self.binary = level_encoding(self.levels)
        kh, kw = self.kernel_size
        self.register_buffer("weight_bits", torch.zeros(out_channels, kh, kw, words_for(in_channels),
                                                        dtype=torch.int64))
        self.register_buffer("weight_pops", torch.zeros(out_channels, kh * kw, dtype=torch.int32))
        self.register_buffer("scale", torch.ones(out_channels))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)
        fused = self.out_levels is not None
        count = threshold_count(self.out_levels) if fused else 0
        self.register_buffer("out_thresholds", torch.zeros(count, out_channels) if fused else None)
        self.register_buffer("out_sgn", torch.ones(out_channels) if fused else None)
        self.register_buffer("thresholds", thresholds, persistent=False)
        self.register_buffer("in_thresholds", None if in_thresholds is None else
                             torch.tensor(in_thresholds, dtype=torch.float32), persistent=False)
        self.register_buffer("in_sgn", None if in_sgn is None else torch.tensor(in_sgn, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("steps", steps, persistent=False)
        # the residual epilogue (fuse_residual): which of bias_in / prelu / bias_out it has
        self.residual_pool = None if residual_pool is None else int(residual_pool)
        self.residual_act = tuple(residual_act)
        self.float_pool = int(float_pool)
        for name in ("bias_in", "prelu", "bias_out"):
            self.register_buffer(f"residual_{name}", torch.zeros(out_channels) if name in self.residual_act else None)
        self.threads = None  # None: kernel_threads() at call time
        self._kernel = None
        self._planes_fit = max(threshold_count(self.levels), count) <= MAX_NATIVE_PLANES

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
        self.invalidate()
        self.weight_bits.copy_(bits)
        self.weight_pops.copy_(pops)
        self.scale.copy_(scale.detach().reshape(-1))
        if bias is not None:
            self.bias.copy_(bias.detach().reshape(-1))

    def set_scale_bias(self, scale: torch.Tensor, bias: torch.Tensor) -> None:
        """Replace the per-channel scale and bias (a BatchNorm folded into them)."""
        self.scale.copy_(scale.detach().reshape(-1))
        self.register_buffer("bias", bias.detach().to(torch.float32).reshape(-1).clone())
        self.invalidate()

    def fuse_output(self, levels, pool: int, thresholds: torch.Tensor, sgn: torch.Tensor, values: bool = False) -> None:
        """Emit the next layer's packed input (levels ``levels``) instead of floats; see the class doc.

        With ``values`` the output is the quantized (and pooled) levels as a float NCHW tensor.
        """
        self.out_levels, self.out_pool, self.out_values = [float(v) for v in levels], int(pool), bool(values)
        self.register_buffer("out_thresholds", thresholds.to(torch.float32).clone())
        self.register_buffer("out_sgn", sgn.to(torch.float32).clone())
        self._planes_fit = self._planes_fit and thresholds.shape[0] <= MAX_NATIVE_PLANES
        self.invalidate()

    def fuse_input(self, thresholds, compare: str, sgn=None) -> None:
        """Take the float input of the activation quantizer (and BatchNorm) in front: plane k of
        channel c is ``compare(sgn[c] * x, thresholds[k])`` (``[Q]``) or ``thresholds[k][c]``
        (``[Q, C]``), ``compare`` as in pack_quantized."""
        self.in_thresholds = torch.as_tensor(thresholds, dtype=torch.float32).clone()
        self.in_sgn = None if sgn is None else torch.as_tensor(sgn, dtype=torch.float32).clone()
        self.in_compare = compare
        self.invalidate()

    def fuse_residual(self, pool: int | None, bias_in=None, slope=None, bias_out=None) -> None:
        """Take over the real-valued residual unit around this conv (Bi-Real-Net, ReActNet):
        ``bias_out + prelu(bias_in + (y + shortcut(x)))``, ``x`` this layer's float input, the
        shortcut ``x`` average-pooled by ``pool`` with zero channels appended (None: no shortcut),
        each of ``bias_in``, ``slope`` (PReLU), ``bias_out`` per channel or None."""
        if self.in_compare is None or self.packed_input or self.out_levels is not None:
            raise ValueError("the residual epilogue needs float input and float output")
        self.residual_pool = None if pool is None else int(pool)
        given = {"bias_in": bias_in, "prelu": slope, "bias_out": bias_out}
        self.residual_act = tuple(name for name, value in given.items() if value is not None)
        for name, value in given.items():
            self.register_buffer(f"residual_{name}", None if value is None else
                                 value.detach().to(torch.float32).reshape(-1).expand(self.out_channels).clone())
        self.invalidate()

    def fuse_float_pool(self, window: int) -> None:
        """Max-pool the residual epilogue's output over ``window`` x ``window`` (stride = window)."""
        self.float_pool = int(window)
        self.invalidate()

    @property
    def has_residual(self) -> bool:
        return self.residual_pool is not None or bool(self.residual_act) or self.float_pool > 1

    def codes(self) -> torch.Tensor:
        """The {-1,+1} weight codes [OC, C, KH, KW], unpacked (for the reference path and checks)."""
        bits = unpack_bits(self.weight_bits, self.in_channels).permute(0, 3, 1, 2)
        return (1 - 2 * bits.to(torch.int8)).to(torch.int8)

    def packed_bytes(self) -> int:
        """Bytes the weights occupy in memory (bits + per-channel scale and bias)."""
        extra = self.scale.numel() * 4 + (0 if self.bias is None else self.bias.numel() * 4)
        return self.weight_bits.numel() * 8 + extra

    def kernel(self) -> ConvKernel:
        """The native kernel, built on first use from the buffers (see :meth:`invalidate`)."""
        if self._kernel is None:
            kernel = ConvKernel(self.weight_bits, self.weight_pops, self.in_channels, self.scale, self.bias,
                                self.stride, self.padding, self.steps, self.out_thresholds, self.out_sgn,
                                self.out_levels == [-1.0, 1.0], self.out_pool,
                                torch.tensor(self.out_levels) if self.out_values else None, self.binary,
                                self._out_binary())
            if self.in_compare is not None:
                kernel.set_input_packing(self.in_thresholds, self.in_compare, self.in_sgn)
            elif self.thresholds is None:
                kernel.set_input_packing(torch.zeros(1), "lt")
            else:
                kernel.set_input_packing(self.thresholds, "ge")
            if self.has_residual:
                kernel.set_residual(self.residual_pool, self.residual_bias_in, self.residual_prelu,
                                    self.residual_bias_out, self.float_pool)
            self._kernel = kernel
        return self._kernel

    def _out_binary(self) -> bool:
        """Whether the packed output is binary-weighted planes (the next layer's levels are D * i)."""
        return self.out_levels is not None and not self.out_values and binary_step(self.out_levels) is not None

    def invalidate(self) -> None:
        """Drop the kernel's copy of the buffers; done by set_codes, load_state_dict and .to()."""
        self._kernel = None

    def __getstate__(self):
        """Copies and pickles leave the native kernel (raw pointers into this layer's buffers) behind."""
        state = self.__dict__.copy()
        state["_kernel"] = None
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        self.invalidate()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.invalidate()
        return super()._apply(fn, *args, **kwargs)

    def _native_ok(self, x: torch.Tensor) -> bool:
        wanted = torch.int64 if self.packed_input else torch.float32
        return self._planes_fit and x.is_cpu and x.dtype == wanted and native_library() is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._native_ok(x):
            return self._reference_forward(x)
        # float input is packed by the same native call
        kernel = self._kernel if self._kernel is not None else self.kernel()
        return kernel(x, self.threads or kernel_threads())

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function in PyTorch (no compiler, other devices): unpack, convolve, threshold, pool, pack."""
        source = x
        if self.packed_input:
            x = self._unpack_input(x)
        elif self.in_compare is not None:
            x = self._quantize_input(x)
        if self.out_levels is None:
            y = reference_binary_conv2d(x, self.codes(), self.scale, self.bias, self.stride, self.padding,
                                        self.thresholds, self.steps, self.binary)
            return self._residual_reference(y, source) if self.has_residual else y
        values = reference_binary_conv2d(x, self.codes(), torch.ones(self.out_channels), None, self.stride,
                                         self.padding, self.thresholds, self.steps, self.binary)
        signed = values * self.out_sgn.view(1, -1, 1, 1)
        reached = (signed[:, None] >= self.out_thresholds[None, :, :, None, None]).to(torch.float32)
        if self.out_pool > 1:
            reached = F.max_pool2d(reached.flatten(0, 1), self.out_pool).unflatten(0, reached.shape[:2])
        if self.out_values:
            return torch.tensor(self.out_levels, dtype=torch.float32)[reached.sum(1).to(torch.int64)]
        bits = therm_to_binary(reached.bool(), 1) if self._out_binary() else reached.bool()
        if self.out_levels == [-1.0, 1.0]:
            bits = ~bits
        return _pack_bool_reference(bits.permute(0, 1, 3, 4, 2))

    def _residual_reference(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The residual epilogue in PyTorch, in the order the unit's own modules run it."""
        if self.residual_pool is not None:
            shortcut = F.avg_pool2d(x, self.residual_pool) if self.residual_pool > 1 else x
            y = y + F.pad(shortcut, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))
        if self.residual_bias_in is not None:
            y = y + self.residual_bias_in.view(1, -1, 1, 1)
        if self.residual_prelu is not None:
            y = F.prelu(y, self.residual_prelu)
        if self.residual_bias_out is not None:
            y = y + self.residual_bias_out.view(1, -1, 1, 1)
        return F.max_pool2d(y, self.float_pool) if self.float_pool > 1 else y

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the folded activation quantizer would have produced from ``x``."""
        thresholds = self.in_thresholds.reshape(self.in_thresholds.shape[0], -1)  # [Q, 1] or [Q, C]
        if self.in_sgn is not None:
            x = x * self.in_sgn.view(1, -1, 1, 1)
        bits = _TORCH_COMPARE[self.in_compare](x[:, None], thresholds.view(1, *thresholds.shape, 1, 1))
        if self.in_compare.startswith("not_"):  # sign bits: 1 means -1
            return 1.0 - 2.0 * bits[:, 0].to(torch.float32)
        return torch.tensor(self.levels, dtype=torch.float32)[bits.sum(1)]

    def _unpack_input(self, bits: torch.Tensor) -> torch.Tensor:
        """Packed planes [N, P, H, W, words] -> the quantized float input they encode."""
        if bits.dim() == 4:
            bits = bits.unsqueeze(1)
        planes = unpack_bits(bits, self.in_channels).permute(0, 1, 4, 2, 3).to(torch.float32)
        if self.thresholds is None:
            return 1.0 - 2.0 * planes[:, 0]
        levels = torch.tensor(self.levels, dtype=torch.float32)
        if self.binary:  # plane j is bit j of the level index
            weights = torch.pow(2.0, torch.arange(planes.shape[1], dtype=torch.float32)).view(1, -1, 1, 1, 1)
            return levels[(planes * weights).sum(1).to(torch.int64)]
        return levels[planes.sum(1).to(torch.int64)]

    def get_config(self) -> dict:
        config = {"in_channels": self.in_channels, "out_channels": self.out_channels,
                  "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                  "bias": self.bias is not None, "levels": self.levels}
        if self.packed_input or self.out_levels is not None:
            config.update(packed_input=self.packed_input, out_levels=self.out_levels, out_pool=self.out_pool,
                          out_values=self.out_values)
        if self.in_compare is not None:
            config.update(in_thresholds=self.in_thresholds.tolist(), in_compare=self.in_compare)
            if self.in_sgn is not None:
                config.update(in_sgn=self.in_sgn.tolist())
        if self.has_residual:
            config.update(residual_pool=self.residual_pool, residual_act=list(self.residual_act),
                          float_pool=self.float_pool)
        return config

    def extra_repr(self) -> str:
        kind = "binary-weighted planes" if self.binary else "planes"
        mode = "sign" if self.thresholds is None else f"{self.steps.numel()} {kind}"
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, {mode}")
        if self.packed_input:
            text += ", packed input"
        if self.in_compare is not None:
            text += ", quantizes its input"
        if self.out_levels is not None:
            kind = "quantized float" if self.out_values else f"packed ({encoded_planes(self.out_levels)} planes)"
            text += f", {kind} output, pool {self.out_pool}"
        if self.has_residual:
            shortcut = "no shortcut" if self.residual_pool is None else f"shortcut pool {self.residual_pool}"
            text += f", residual epilogue ({shortcut}, {'+'.join(self.residual_act) or 'no activation'}"
            text += f", max pool {self.float_pool})" if self.float_pool > 1 else ")"
        return text


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


def _hooked(modules: list) -> bool:
    """Whether a forward hook (global, or on one of ``modules``) wants the layers called as modules."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks:
            return True
    return False


def _links(kernel: ConvKernel, following: PackedBinaryConv2d) -> bool:
    """Whether ``following`` takes ``kernel``'s output as it is: packed planes it expects, or float
    values it packs itself (a residual unit's output feeding the next unit)."""
    if kernel.packed_output:
        return following.packed_input
    return kernel.out_values is None and following.in_compare is not None and not following.packed_input


@register_module_type
class SkipIdentitySequential(nn.Sequential):
    """The Sequential of a compiled model: it skips the ``nn.Identity`` left where
    :func:`compile` folded layers, and runs each stretch of packed layers that pass
    packed activations to one another by one native call (:class:`KernelChain`).

    Calling the packed layers one by one as modules cost about 15 us each (0.15-0.2 ms
    per vgg14 forward, 8-10% of it at 2 threads); the packed activations between the
    layers of a chain stay in buffers kept per calling thread, seen by nothing else.
    Layers with hooks are called as modules, and so break a chain.  What to run is
    planned once and kept until a child or one of the kernels changes: working it out
    on every call took about a tenth of a width-0.25 vgg14's forward.
    """

    def forward(self, x):
        threads = None
        for step in self._plan():
            if type(step) is not tuple:
                x = step(x)
                continue
            kernel_chain, members = step
            if not members[0]._native_ok(x) or _hooked(members):
                for module in members:
                    x = module(x)
                continue
            if threads is None:
                threads = kernel_threads()
            x = kernel_chain(x, [m.threads or threads for m in members])
        return x

    def _plan(self) -> list:
        """The children in order, each stretch of chained packed layers as one (KernelChain, its layers)
        step; kept while the children and their kernels stay the same objects."""
        children = tuple(self._modules.values())
        cached = self.__dict__.get("_plan_cache")
        if cached is not None and cached[0] == children and [m._kernel for m in cached[2]] == cached[3]:
            return cached[1]
        kept = [m for m in children if type(m) is not nn.Identity]
        kernels = [m.kernel() if type(m) is PackedBinaryConv2d else None for m in kept]
        plan, i = [], 0
        while i < len(kept):
            if kernels[i] is None:
                plan.append(kept[i])
                i += 1
                continue
            j = i
            while j + 1 < len(kept) and kernels[j + 1] is not None and _links(kernels[j], kept[j + 1]):
                j += 1
            plan.append((KernelChain(kernels[i:j + 1]), kept[i:j + 1]))
            i = j + 1
        packed = [m for m, k in zip(kept, kernels) if k is not None]
        self.__dict__["_plan_cache"] = (children, plan, packed, [m._kernel for m in packed])
        return plan

    def __getstate__(self):
        """Copies and pickles leave the chains (native descriptors) behind: rebuilt on first use."""
        state = self.__dict__.copy()
        state.pop("_plan_cache", None)
        return state

    def get_config(self) -> dict:
        return {}  # the children are described on their own


