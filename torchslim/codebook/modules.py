"""Layers whose weight is shared through a codebook.

* :class:`CodebookLinear` / :class:`CodebookConv2d`: scalar weight sharing.  The
  weight is ``table[codes]`` where ``table`` holds the learnable ``centroids``,
  preceded by a fixed exact zero when ``zero_code`` is set (pruned weights stay
  pruned, as in Deep Compression).
* :class:`PQLinear` / :class:`PQConv2d`: product quantization.  The weight is
  viewed as a matrix with one row per (output unit, kernel position) and the
  input channels as columns; the columns are split into subspaces of
  ``subvector`` channels, and every sub-vector is a codeword of its subspace's
  codebook (Q-CNN, Wu et al. 2016).

Gradients reach the centroids through the gather, so a fine-tune sums the
gradients of all the weights of a cluster into its centroid, which is exactly
the centroid update of Deep Compression.  In eval mode without autograd the
reconstructed weight is cached until the codes or centroids change.
``to_float()`` gives back the equivalent plain ``nn`` layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..io import register_module_type
from ..nn import pair as _pair, set_submodule


def code_dtype(num_values: int) -> torch.dtype:
    return torch.uint8 if num_values <= 256 else torch.int32


class SharedWeightLayer(nn.Module):
    """A Linear or Conv2d whose ``weight`` is rebuilt from compressed parameters."""

    kind = "linear"

    def _init_geometry(self, in_features, out_features, bias, kernel_size=1, stride=1, padding=0,
                       dilation=1, groups=1):
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups = _pair(padding), _pair(dilation), int(groups)
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self._cache = None

    @property
    def weight_shape(self) -> tuple:
        if self.kind == "linear":
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features // self.groups, *self.kernel_size)

    def _build_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def _version(self):
        return tuple((id(t), t._version) for t in (*self.parameters(recurse=False), *self.buffers(recurse=False)))

    @property
    def weight(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self._build_weight()
        key = self._version()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build_weight())
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _geometry_config(self) -> dict:
        if self.kind == "linear":
            return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}
        return {"in_channels": self.in_features, "out_channels": self.out_features,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.bias is not None}

    @torch.no_grad()
    def to_float(self) -> nn.Module:
        """The equivalent plain ``nn.Linear`` / ``nn.Conv2d`` (same outputs)."""
        if self.kind == "linear":
            layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        else:
            layer = nn.Conv2d(self.in_features, self.out_features, self.kernel_size, self.stride, self.padding,
                              self.dilation, self.groups, bias=self.bias is not None)
        layer.weight.copy_(self._build_weight())
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        return layer

    def _copy_bias(self, layer: nn.Module) -> None:
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(layer.bias)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


def _geometry_from(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Linear):
        return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias is not None}
    return {"in_channels": layer.in_channels, "out_channels": layer.out_channels, "kernel_size": layer.kernel_size,
            "stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups,
            "bias": layer.bias is not None}


class _ScalarCodebook(SharedWeightLayer):
    def _init_codebook(self, num_centroids: int, zero_code: bool):
        self.num_centroids, self.zero_code = int(num_centroids), bool(zero_code)
        self.centroids = nn.Parameter(torch.zeros(self.num_centroids))
        self.register_buffer("codes", torch.zeros(self.weight_shape, dtype=code_dtype(self.table_size)))

    @property
    def table_size(self) -> int:
        return self.num_centroids + int(self.zero_code)

    def table(self) -> torch.Tensor:
        if self.zero_code:
            return torch.cat([self.centroids.new_zeros(1), self.centroids])
        return self.centroids

    def _build_weight(self) -> torch.Tensor:
        return self.table()[self.codes.long()]

    def get_config(self) -> dict:
        return {**self._geometry_config(), "num_centroids": self.num_centroids, "zero_code": self.zero_code}

    @classmethod
    def from_layer(cls, layer: nn.Module, centroids: torch.Tensor, codes: torch.Tensor, zero_code: bool):
        """Wrap ``layer``'s geometry and bias around given centroids and codes (into the table)."""
        shared = cls(**_geometry_from(layer), num_centroids=centroids.numel(), zero_code=zero_code)
        with torch.no_grad():
            shared.centroids.copy_(centroids)
            shared.codes.copy_(codes.reshape(shared.weight_shape).to(shared.codes.dtype))
        shared._copy_bias(layer)
        return shared


@register_module_type
class CodebookLinear(_ScalarCodebook):
    kind = "linear"

    def __init__(self, in_features, out_features, bias=True, num_centroids=32, zero_code=False):
        super().__init__()
        self._init_geometry(in_features, out_features, bias)
        self._init_codebook(num_centroids, zero_code)


@register_module_type
class CodebookConv2d(_ScalarCodebook):
    kind = "conv"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, num_centroids=256, zero_code=False):
        super().__init__()
        self._init_geometry(in_channels, out_channels, bias, kernel_size, stride, padding, dilation, groups)
        self._init_codebook(num_centroids, zero_code)


def pq_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Rows = (output unit, kernel position), columns = input channels."""
    if weight.ndim == 2:
        return weight
    return weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def pq_unmatrix(matrix: torch.Tensor, shape) -> torch.Tensor:
    if len(shape) == 2:
        return matrix
    out, cin, kh, kw = shape
    return matrix.reshape(out, kh, kw, cin).permute(0, 3, 1, 2)


class _ProductCodebook(SharedWeightLayer):
    def _init_codebook(self, subvector: int, codewords: int):
        self.subvector, self.codewords = int(subvector), int(codewords)
        cols = self.weight_shape[1]
        if cols % self.subvector:
            raise ValueError(f"{cols} input channels do not split into sub-vectors of {self.subvector}")
        rows = self.weight_shape[0] * (self.weight_shape[2] * self.weight_shape[3] if self.kind == "conv" else 1)
        self.subspaces = cols // self.subvector
        self.codebooks = nn.Parameter(torch.zeros(self.subspaces, self.codewords, self.subvector))
        self.register_buffer("codes", torch.zeros(self.subspaces, rows, dtype=code_dtype(self.codewords)))

    def _build_weight(self) -> torch.Tensor:
        codes = self.codes.long()
        parts = self.codebooks[torch.arange(self.subspaces)[:, None], codes]  # S x rows x d
        matrix = parts.permute(1, 0, 2).reshape(codes.shape[1], -1)
        return pq_unmatrix(matrix, self.weight_shape).contiguous()

    def get_config(self) -> dict:
        return {**self._geometry_config(), "subvector": self.subvector, "codewords": self.codewords}

    @classmethod
    def from_layer(cls, layer: nn.Module, codebooks: torch.Tensor, codes: torch.Tensor):
        shared = cls(**_geometry_from(layer), subvector=codebooks.shape[2], codewords=codebooks.shape[1])
        with torch.no_grad():
            shared.codebooks.copy_(codebooks)
            shared.codes.copy_(codes.to(shared.codes.dtype))
        shared._copy_bias(layer)
        return shared


@register_module_type
class PQLinear(_ProductCodebook):
    kind = "linear"

    def __init__(self, in_features, out_features, bias=True, subvector=4, codewords=64):
        super().__init__()
        self._init_geometry(in_features, out_features, bias)
        self._init_codebook(subvector, codewords)


@register_module_type
class PQConv2d(_ProductCodebook):
    kind = "conv"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, subvector=4, codewords=64):
        super().__init__()
        self._init_geometry(in_channels, out_channels, bias, kernel_size, stride, padding, dilation, groups)
        self._init_codebook(subvector, codewords)


SHARED_TYPES = (CodebookLinear, CodebookConv2d, PQLinear, PQConv2d)


def materialize(model: nn.Module) -> nn.Module:
    """Replace every layer that has ``to_float()`` by its plain equivalent, in place."""
    for path, module in list(model.named_modules()):
        if path and hasattr(module, "to_float") and callable(module.to_float):
            set_submodule(model, path, module.to_float())
    return model
