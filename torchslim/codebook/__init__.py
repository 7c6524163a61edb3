"""Weight sharing and product quantization: scalar k-means codebooks (Deep
Compression), PQ of Linear and Conv weights, Q-CNN (output-error PQ with error
correction), and Huffman coding of the codes.

    from torchslim.codebook import WeightShareConfig, weight_share, PQConfig, product_quantize
    shared = weight_share(pruned, WeightShareConfig(bits=5, conv_bits=8))
    pq = product_quantize(model, PQConfig(subvector=4, bits=6, method="qcnn"), train)
"""

from .kmeans import kmeans, kmeans_1d
from .modules import (SHARED_TYPES, CodebookConv2d, CodebookLinear, PQConv2d, PQLinear, SharedWeightLayer,
                      materialize)
from .pq import PQ_METHODS, PQConfig, product_quantize, register_pq_method
from .qcnn import calibration_batch, layer_output_errors
from .weight_share import CODEBOOK_SIDE_DTYPES, WeightShareConfig, round_side_data, share_layer, weight_share

__all__ = [
    "PQ_METHODS",
    "SHARED_TYPES",
    "CODEBOOK_SIDE_DTYPES",
    "CodebookConv2d",
    "CodebookLinear",
    "PQConfig",
    "PQConv2d",
    "PQLinear",
    "SharedWeightLayer",
    "WeightShareConfig",
    "calibration_batch",
    "kmeans",
    "kmeans_1d",
    "layer_output_errors",
    "materialize",
    "product_quantize",
    "register_pq_method",
    "round_side_data",
    "share_layer",
    "weight_share",
]
