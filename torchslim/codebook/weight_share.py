"""Scalar weight sharing: one k-means codebook per layer (Deep Compression, sec. 3).

``weight_share(model, WeightShareConfig(bits=5, conv_bits=8))`` returns a copy in
which every Linear/Conv2d is a :class:`CodebookLinear` / :class:`CodebookConv2d`
with ``2**bits`` shared values.  When the layer was pruned (``keep_zeros``), code
0 is an exact zero that never trains, and the other ``2**bits - 1`` centroids
cluster the surviving weights.  Fine-tune the result with
:func:`torchslim.train.fit`: the centroids receive the summed gradient of their
cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import record_meta, set_submodule
from .kmeans import INITS, kmeans_1d
from .modules import CodebookConv2d, CodebookLinear
from ..sparse.magnitude import prunable_layers

SHAREABLE = {nn.Linear: CodebookLinear, nn.Conv2d: CodebookConv2d}


@dataclass
class WeightShareConfig(ConfigMixin):
    option_kind = "weight-sharing option"

    bits: int = 5  # bits per weight of Linear layers (2**bits shared values)
    conv_bits: int | None = None  # of Conv2d layers; None: same as `bits`
    init: str = "linear"  # linear | density | random
    iters: int = 30
    keep_zeros: bool = True
    exclude: tuple = ()
    seed: int = 0
    layer_bits: dict = field(default_factory=dict)  # {path: bits}, overrides bits / conv_bits

    def __post_init__(self):
        for name in ("bits", "conv_bits"):
            value = getattr(self, name)
            if value is not None and not 1 <= int(value) <= 16:
                raise UserError(f"{name} must be in 1..16, got {value}")
        for path, value in self.layer_bits.items():
            if not 1 <= int(value) <= 16:
                raise UserError(f"bits of {path} must be in 1..16, got {value}")
        if self.init not in INITS:
            raise unknown_choice("k-means initialisation", self.init, INITS)
        self.exclude = tuple(self.exclude)

    def bits_for(self, layer: nn.Module, path: str = "") -> int:
        if path in self.layer_bits:
            return int(self.layer_bits[path])
        return int(self.conv_bits if isinstance(layer, nn.Conv2d) and self.conv_bits else self.bits)


def share_layer(layer: nn.Module, bits: int, init: str = "linear", iters: int = 30, keep_zeros: bool = True,
                seed: int = 0) -> nn.Module:
    """The codebook version of one Linear/Conv2d layer."""
    weight = layer.weight.detach().float()
    zero_code = keep_zeros and bool((weight == 0).any())
    values = weight[weight != 0] if zero_code else weight.reshape(-1)
    levels = (1 << bits) - int(zero_code)
    if values.numel() == 0:
        centroids, codes = torch.zeros(1), torch.zeros(0, dtype=torch.int64)
    else:
        centroids, codes = kmeans_1d(values, levels, init=init, iters=iters, seed=seed)
    full = torch.zeros(weight.shape, dtype=torch.int64)
    if zero_code:
        full[weight != 0] = codes + 1
    else:
        full = codes.reshape(weight.shape)
    return SHAREABLE[type(layer)].from_layer(layer, centroids, full, zero_code)


def weight_share(model: nn.Module, config: WeightShareConfig) -> nn.Module:
    """A copy of ``model`` with every shareable layer clustered; the caller's model is untouched."""
    shared = copy.deepcopy(model)
    candidates = {p: m for p, m in prunable_layers(shared, config.exclude).items() if type(m) in SHAREABLE}
    if not candidates:
        raise UserError("the model has no Linear or Conv2d layer to share weights in")
    unknown = sorted(set(config.layer_bits) - set(candidates))
    if unknown:
        raise unknown_choice("layer to share weights in", unknown[0], candidates)
    for index, (path, layer) in enumerate(candidates.items()):
        new = share_layer(layer, config.bits_for(layer, path), config.init, config.iters, config.keep_zeros,
                          config.seed + index)
        set_submodule(shared, path, new)
    record_meta(shared, weight_share=config.to_dict())
    return shared.eval()


CODEBOOK_SIDE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@torch.no_grad()
def round_side_data(model: nn.Module, dtype: str = "float16") -> nn.Module:
    """Round the centroids and biases of every codebook layer to values ``dtype`` holds exactly, in place.

    The weights stay float32 tensors; the packed container then stores these
    values in ``dtype`` without loss (it picks the narrowest exact type), halving
    the codebooks and per-channel biases that dominate a small pruned model's file.
    """
    if dtype not in CODEBOOK_SIDE_DTYPES:
        raise unknown_choice("side-data dtype", dtype, CODEBOOK_SIDE_DTYPES)
    target = CODEBOOK_SIDE_DTYPES[dtype]
    for module in model.modules():
        if isinstance(module, (CodebookLinear, CodebookConv2d)):
            for tensor in (module.centroids, module.bias):
                if tensor is not None:
                    tensor.copy_(tensor.to(target).to(tensor.dtype))
    return model
