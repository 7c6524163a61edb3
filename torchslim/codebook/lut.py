"""Lookup-table inference for product-quantized Linear layers (Q-CNN's test-time path).

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
table entries; its per-bag cost is only paid back over a batch).

:class:`PQLookupLinear` is a runtime layer (it is not saved: save the PQ model,
swap with :func:`use_lookup_tables` after loading).  Its output equals the
decoded layer's up to float rounding (the additions happen in another order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import PQLinear

SMALL_BATCH = 4  # up to this many inputs, gather each input's sums with torch.take


class PQLookupLinear(nn.Module):
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

    def tables(self, x: torch.Tensor) -> torch.Tensor:
        """``T[s * K + k, n] = x[n, s] . C[s, k]`` for a batch ``x`` of shape ``N x in``."""
        parts = x.reshape(x.shape[0], self.subspaces, self.subvector)
        return torch.einsum("nsd,skd->skn", parts, self.codebooks).reshape(self.subspaces * self.codewords, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        tables = self.tables(flat)  # S*K x N
        if flat.shape[0] <= SMALL_BATCH:
            out = torch.stack([torch.take(column, self.bags).sum(-1) for column in tables.t()]) if len(flat) else \
                tables.new_zeros(0, self.out_features)
        else:
            out = F.embedding_bag(self.bags, tables, mode="sum").t()  # N x out
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)


def use_lookup_tables(model: nn.Module) -> list[str]:
    """Swap every :class:`PQLinear` of ``model`` for a :class:`PQLookupLinear`, in place; returns their paths."""
    swapped = []
    for path, module in list(model.named_modules()):
        if type(module) is PQLinear:
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, name, PQLookupLinear(module))
            swapped.append(path)
    return swapped
