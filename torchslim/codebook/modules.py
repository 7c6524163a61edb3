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
from torch import nn

from ..io import register_module_type
from ..nn import CompressedLayer, Conv2dGeometry, LinearGeometry, float_copy, geometry_of
from ..nn import pair as _pair


def code_dtype(num_values: int) -> torch.dtype:
    return torch.uint8 if num_values <= 256 else torch.int32


class SharedWeightLayer(CompressedLayer):
    """A Linear or Conv2d (its ``geometry``) whose ``weight`` is rebuilt from compressed parameters."""

    def _init_geometry(self, geometry: LinearGeometry | Conv2dGeometry):
        self.geometry = geometry
        for name, value in geometry.layer_attributes().items():  # in_features, out_features, kernel_size, ...
            setattr(self, name, value)
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if geometry.bias else None
        self._cache = None

    @property
    def weight_shape(self) -> tuple:
        return self.geometry.weight_shape

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
        return self.geometry.apply(x, self.weight, self.bias)

    def _copy_bias(self, layer: nn.Module) -> None:
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(layer.bias)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


def _linear_geometry(in_features, out_features, bias) -> LinearGeometry:
    return LinearGeometry(int(in_features), int(out_features), bool(bias))


def _conv_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias) -> Conv2dGeometry:
    return Conv2dGeometry(int(in_channels), int(out_channels), _pair(kernel_size), _pair(stride), _pair(padding),
                          _pair(dilation), int(groups), bool(bias))


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
        return {**self.geometry.config(), "num_centroids": self.num_centroids, "zero_code": self.zero_code}

    @classmethod
    def from_layer(cls, layer: nn.Module, centroids: torch.Tensor, codes: torch.Tensor, zero_code: bool):
        """Wrap ``layer``'s geometry and bias around given centroids and codes (into the table)."""
        shared = cls(**geometry_of(layer).config(), num_centroids=centroids.numel(), zero_code=zero_code)
        with torch.no_grad():
            shared.centroids.copy_(centroids)
            shared.codes.copy_(codes.reshape(shared.weight_shape).to(shared.codes.dtype))
        shared._copy_bias(layer)
        return shared


@register_module_type
class CodebookLinear(_ScalarCodebook):
    def __init__(self, in_features, out_features, bias=True, num_centroids=32, zero_code=False):
        super().__init__()
        self._init_geometry(_linear_geometry(in_features, out_features, bias))
        self._init_codebook(num_centroids, zero_code)


@register_module_type
class CodebookConv2d(_ScalarCodebook):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, num_centroids=256, zero_code=False):
        super().__init__()
        self._init_geometry(_conv_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                           bias))
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
        rows = self.weight_shape[0] * self.geometry.positions
        self.subspaces = cols // self.subvector
        self.codebooks = nn.Parameter(torch.zeros(self.subspaces, self.codewords, self.subvector))
        self.register_buffer("codes", torch.zeros(self.subspaces, rows, dtype=code_dtype(self.codewords)))

    def _build_weight(self) -> torch.Tensor:
        codes = self.codes.long()
        parts = self.codebooks[torch.arange(self.subspaces)[:, None], codes]  # S x rows x d
        matrix = parts.permute(1, 0, 2).reshape(codes.shape[1], -1)
        return pq_unmatrix(matrix, self.weight_shape).contiguous()

    def get_config(self) -> dict:
        return {**self.geometry.config(), "subvector": self.subvector, "codewords": self.codewords}

    @classmethod
    def from_layer(cls, layer: nn.Module, codebooks: torch.Tensor, codes: torch.Tensor):
        shared = cls(**geometry_of(layer).config(), subvector=codebooks.shape[2], codewords=codebooks.shape[1])
        with torch.no_grad():
            shared.codebooks.copy_(codebooks)
            shared.codes.copy_(codes.to(shared.codes.dtype))
        shared._copy_bias(layer)
        return shared


@register_module_type
class PQLinear(_ProductCodebook):
    def __init__(self, in_features, out_features, bias=True, subvector=4, codewords=64):
        super().__init__()
        self._init_geometry(_linear_geometry(in_features, out_features, bias))
        self._init_codebook(subvector, codewords)


@register_module_type
class PQConv2d(_ProductCodebook):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, subvector=4, codewords=64):
        super().__init__()
        self._init_geometry(_conv_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                           bias))
        self._init_codebook(subvector, codewords)


SHARED_TYPES = (CodebookLinear, CodebookConv2d, PQLinear, PQConv2d)


def materialize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every compressed layer as its plain equivalent: :func:`torchslim.nn.float_copy`."""
    return float_copy(model)
