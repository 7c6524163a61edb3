"""Lookup-table inference for product-quantized Linear and Conv2d layers (Q-CNN's test-time path).

A :class:`~torchslim.codebook.modules.PQLinear` stores, for every subspace ``s``
of ``d`` input features, a codebook ``C[s]`` of ``K`` codewords and one code per
output unit.  Its output is

    y[n, o] = sum_s  x[n, s] . C[s, codes[s, o]]  + b[o]

so the dot products ``T[n, s, k] = x[n, s] . C[s, k]`` are all a layer needs:
``N * in * K`` multiply-adds to build the table (independent of the output
width), then ``N * S * out`` table look-ups summed by code, instead of the
``N * in * out`` multiply-adds of the decoded weight.  The sums by code run
through ``torch.take`` per input for small batches (``SMALL_BATCH``) and
through ``embedding_bag`` otherwise (bags = output units, each summing its ``S``
table entries; its per-bag cost is only paid back over a batch).  On the CPU, with
at most 256 codewords and no gradient needed, the native kernels
(:mod:`torchslim.deploy`, ``csrc/pqlut.h``) build the table and gather the sums
instead: one input at a time 8 outputs per AVX2 gather, a batch 8 inputs at a
time from a table holding each entry for the 8 side by side; without a compiler
the PyTorch path runs.

:class:`PQLookupConv2d` does the same for a :class:`PQConv2d`, whose codebooks
are shared by every kernel position: the table ``x_s[p] . C[s, k]`` is built once
per input *pixel* (``C * K`` multiply-adds), and each output sums ``taps * S``
entries (``csrc/pqconv.h``; stride 1, no dilation or groups).  Other convolutions,
and every call without the native kernels, run the decoded-weight convolution.

Both are runtime layers (they are not saved: save the PQ model, swap with
:func:`use_lookup_tables` after loading).  Their outputs equal the decoded layer's
up to float rounding (the additions happen in another order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..codebook.modules import PQConv2d, PQLinear
from . import build
from .lowering import RuntimeLayer, lower_layers, register_lowering

SMALL_BATCH = 4  # up to this many inputs, gather each input's sums with torch.take


class _NativeBuffers(RuntimeLayer):
    """Caches the native library and its buffers' pointers until the module is moved or cast."""

    _prepared = None

    def _native_ok(self, x: torch.Tensor) -> bool:
        return self.native and x.dtype is torch.float32 and x.device.type == "cpu" and \
            not (x.requires_grad and torch.is_grad_enabled())

    def _prepare(self):
        """(library, pointers of the layer's native buffers), or False when the kernel cannot run
        (no compiler, buffers not float32 on the CPU); cached until the module is moved or cast."""
        lib = build.native_library()
        floats = (self.codebooks_t,) + (() if self.bias is None else (self.bias,))
        ok = lib is not None and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in floats)
        self._prepared = ok and (lib, self.codebooks_t.data_ptr(), self.codes_u8.data_ptr(),
                                 None if self.bias is None else self.bias.data_ptr())
        return self._prepared

    def _pointers(self):
        return self._prepared if self._prepared is not None else self._prepare()

    def _apply(self, fn, *args, **kwargs):
        self._prepared = None  # .to(), .cpu(), .double(), ... replace the buffers
        return super()._apply(fn, *args, **kwargs)


class PQLookupLinear(_NativeBuffers):
    """A :class:`PQLinear` evaluated from per-input lookup tables (same outputs, another order of sums)."""

    def __init__(self, layer: PQLinear):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.subspaces, self.codewords, self.subvector = layer.subspaces, layer.codewords, layer.subvector
        self.register_buffer("codebooks", layer.codebooks.detach().clone())  # S x K x d
        offsets = torch.arange(self.subspaces)[:, None] * self.codewords
        # bag o gathers entry s * K + codes[s, o] of the flattened table, for every subspace s
        self.register_buffer("bags", (layer.codes.long() + offsets).t().contiguous())  # out x S
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        # the native kernel's layouts: codes as bytes [S][out], codebooks transposed [S][d][K]
        self.native = self.codewords <= 256
        if self.native:
            self.register_buffer("codes_u8", layer.codes.to(torch.uint8).contiguous(), persistent=False)
            self.register_buffer("codebooks_t", self.codebooks.transpose(1, 2).contiguous(), persistent=False)

    def tables(self, x: torch.Tensor) -> torch.Tensor:
        """``T[s * K + k, n] = x[n, s] . C[s, k]`` for a batch ``x`` of shape ``N x in``."""
        parts = x.reshape(x.shape[0], self.subspaces, self.subvector)
        return torch.einsum("nsd,skd->skn", parts, self.codebooks).reshape(self.subspaces * self.codewords, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        out = self._native(flat)
        if out is None:
            out = self._torch(flat)
        return out.reshape(*lead, self.out_features)

    def _native(self, flat: torch.Tensor) -> torch.Tensor | None:
        """The native kernel's output, or None where it does not apply (set ``native = False`` to skip it)."""
        if not self._native_ok(flat):
            return None
        prepared = self._pointers()
        if not prepared:
            return None
        lib, codebooks, codes, bias = prepared
        flat = flat.detach().contiguous()
        out = torch.empty(flat.shape[0], self.out_features)
        # scratch per call (several threads may share the layer): one input's table, or for a
        # batch the 8-input table and the inputs transposed
        per_input = self.subspaces * self.codewords
        table = torch.empty(8 * (per_input + self.in_features) if flat.shape[0] > 1 else per_input)
        lib.bk_pq_linear(flat.data_ptr(), flat.shape[0], self.subspaces, self.codewords, self.subvector, codebooks,
                         codes, self.out_features, bias, out.data_ptr(), table.data_ptr(), torch.get_num_threads())
        return out

    def _torch(self, flat: torch.Tensor) -> torch.Tensor:
        """The same sums in PyTorch: ``torch.take`` per input for small batches, else ``embedding_bag``."""
        tables = self.tables(flat)  # S*K x N
        if flat.shape[0] <= SMALL_BATCH:
            out = torch.stack([torch.take(column, self.bags).sum(-1) for column in tables.t()]) if len(flat) else \
                tables.new_zeros(0, self.out_features)
        else:
            out = F.embedding_bag(self.bags, tables, mode="sum").t()  # N x out
        if self.bias is not None:
            out = out + self.bias
        return out


class PQLookupConv2d(_NativeBuffers):
    """A :class:`PQConv2d` evaluated from per-pixel lookup tables (same outputs, another order of sums).

    The native kernel covers stride 1, dilation 1, one group and at most 256 codewords;
    anything else (and any call the kernel cannot take) runs ``layer`` itself, the
    decoded-weight convolution, which this module keeps.
    """

    def __init__(self, layer: PQConv2d):
        super().__init__()
        self.layer = layer
        self.in_channels, self.out_channels = layer.in_features, layer.out_features
        self.kernel_size, self.padding = layer.kernel_size, layer.padding
        self.subspaces, self.codewords, self.subvector = layer.subspaces, layer.codewords, layer.subvector
        self.native = (self.codewords <= 256 and layer.stride == (1, 1) and layer.dilation == (1, 1)
                       and layer.groups == 1)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone(), persistent=False)
        if self.native:
            kh, kw = self.kernel_size
            # codes [S][(o, i, j)]: one subspace's taps of one channel side by side, as the kernel reads them
            self.register_buffer("codes_u8", layer.codes.to(torch.uint8).contiguous(), persistent=False)
            self.register_buffer("codebooks_t", layer.codebooks.detach().transpose(1, 2).contiguous(),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._native(x) if x.dim() == 4 else None
        return self.layer(x) if out is None else out

    def _native(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self._native_ok(x) or x.shape[1] != self.in_channels:
            return None
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, _, h, w = x.shape
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        if oh < 1 or ow < 1:
            return None
        prepared = self._pointers()
        if not prepared:
            return None
        lib, codebooks, codes, bias = prepared
        x = x.detach().contiguous()
        out = torch.empty(n, self.out_channels, oh, ow)
        failed = lib.bk_pq_conv(x.data_ptr(), n, self.subspaces, self.subvector, h, w, self.codewords, codebooks,
                                codes, self.out_channels, kh, kw, ph, pw, bias, out.data_ptr(), torch.get_num_threads())
        return None if failed else out  # no memory for the kernel's scratch: the decoded convolution instead


register_lowering(PQLinear, lambda layer, levels, threads: PQLookupLinear(layer))
register_lowering(PQConv2d, lambda layer, levels, threads: PQLookupConv2d(layer))


def use_lookup_tables(model: nn.Module) -> list[str]:
    """Swap every :class:`PQLinear` / :class:`PQConv2d` of ``model`` for its lookup-table layer, in place
    (:func:`torchslim.deploy.lowering.lower_layers` without a graph: the layers whose lowering needs
    nothing from their input); returns their paths.  ``torchslim.deploy.compile`` does it on a copy."""
    return lower_layers(model)[0]
