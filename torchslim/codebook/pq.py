"""Product quantization of Linear and Conv2d weights: plain PQ and Q-CNN.

``product_quantize(model, PQConfig(subvector=4, bits=6, method="pq"))`` splits
each layer's input channels into subspaces of ``subvector`` channels and learns
one codebook of ``2**bits`` codewords per subspace, so a weight costs
``bits / subvector`` bits plus the codebooks.

* ``pq`` minimises the weights' quantization error (k-means per subspace).
* ``qcnn`` (Wu et al. 2016) starts from that and minimises the layer's *output*
  error on calibration inputs, quantizing the layers in order and feeding each
  the inputs of the already-quantized network (error correction); see
  :mod:`torchslim.codebook.qcnn`.

Layers whose input channels do not split into sub-vectors, or that PQ would not
make smaller (codebooks larger than the weight), stay float and are listed in
the returned model's ``torchslim_meta["pq_skipped"]``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import Registry, record_meta, set_submodule
from .kmeans import kmeans
from .modules import PQConv2d, PQLinear, pq_matrix
from ..sparse.magnitude import prunable_layers

PQ_TYPES = {nn.Linear: PQLinear, nn.Conv2d: PQConv2d}
PQ_METHODS = Registry("product quantization method")


def register_pq_method(name: str):
    def decorator(fn):
        PQ_METHODS[name] = fn
        return fn

    return decorator


@dataclass
class PQConfig(ConfigMixin):
    option_kind = "product quantization option"

    subvector: int = 4  # input channels per sub-vector
    bits: int = 6  # bits per code: 2**bits codewords per subspace
    method: str = "pq"  # pq | qcnn
    iters: int = 25  # k-means iterations
    qcnn_iters: int = 6  # Q-CNN alternating rounds per layer
    calib_samples: int = 256  # Q-CNN calibration images
    max_rows: int = 16384  # Q-CNN: input rows (patches) sampled for the statistics
    exclude: tuple = ()
    seed: int = 0

    def __post_init__(self):
        if self.subvector < 1 or not 1 <= self.bits <= 16:
            raise UserError(f"need subvector >= 1 and bits in 1..16 (got {self.subvector}, {self.bits})")
        if self.method not in PQ_METHODS:
            raise unknown_choice("product quantization method", self.method, PQ_METHODS)
        self.exclude = tuple(self.exclude)

    @property
    def codewords(self) -> int:
        return 1 << self.bits


def pq_eligible(layer: nn.Module, config: PQConfig) -> str | None:
    """``None`` when ``layer`` can be product-quantized with profit, else the reason why not."""
    if type(layer) not in PQ_TYPES:
        return "not a Linear/Conv2d"
    matrix_shape = pq_matrix(layer.weight.detach()).shape
    if matrix_shape[1] % config.subvector:
        return f"{matrix_shape[1]} input channels do not split into sub-vectors of {config.subvector}"
    rows, cols = matrix_shape
    packed_bits = cols // config.subvector * (rows * config.bits + config.codewords * config.subvector * 32)
    if packed_bits >= rows * cols * 32:
        return "the codebooks would be larger than the float weight"
    return None


def pq_weight_fit(layer: nn.Module, config: PQConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means per subspace on the weight sub-vectors: ``(codebooks[S, K, d], codes[S, rows])``."""
    matrix = pq_matrix(layer.weight.detach().float())
    rows, cols = matrix.shape
    subspaces = cols // config.subvector
    codebooks = torch.zeros(subspaces, config.codewords, config.subvector)
    codes = torch.zeros(subspaces, rows, dtype=torch.int64)
    for s in range(subspaces):
        vectors = matrix[:, s * config.subvector:(s + 1) * config.subvector]
        centroids, assignment = kmeans(vectors, config.codewords, config.iters, seed=seed + s)
        codebooks[s, :centroids.shape[0]] = centroids
        codes[s] = assignment
    return codebooks, codes


def plan_layers(model: nn.Module, config: PQConfig) -> tuple[dict, dict]:

    chosen, skipped = {}, {}
    for path, layer in prunable_layers(model, config.exclude).items():
        reason = pq_eligible(layer, config)
        if reason is None:
            chosen[path] = layer
        else:
            skipped[path] = reason
    return chosen, skipped


@register_pq_method("pq")
def _weight_error_pq(model, layers, config, calib_set):
    for index, (path, layer) in enumerate(layers.items()):
        codebooks, codes = pq_weight_fit(layer, config, seed=config.seed + 1000 * index)
        set_submodule(model, path, PQ_TYPES[type(layer)].from_layer(layer, codebooks, codes))


def product_quantize(model: nn.Module, config: PQConfig, data=None, *, progress: bool = False) -> nn.Module:
    """A product-quantized copy of ``model`` (the caller's model is untouched); ``data``: Q-CNN's calibration images."""
    if config.method == "qcnn" and data is None:
        raise UserError("Q-CNN needs calibration data (give --data)")
    quantized = copy.deepcopy(model).eval()
    layers, skipped = plan_layers(quantized, config)
    if not layers:
        raise UserError(f"no layer can be product-quantized with sub-vectors of {config.subvector}: "
                        + "; ".join(f"{p}: {r}" for p, r in list(skipped.items())[:3]))
    PQ_METHODS[config.method](quantized, layers, config, data)
    record_meta(quantized, pq=config.to_dict(), pq_skipped=skipped)
    return quantized.eval()


from . import qcnn as _qcnn  # noqa: E402,F401  (registers "qcnn"; it builds on the helpers above)
