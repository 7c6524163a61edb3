"""Unstructured sparsity: magnitude masks (per layer or global), AGP and iterative
schedules, a per-layer report, and relative-index sparse storage.

    from torchslim.sparse import SparsityConfig, sparsify, sparsity_report
    pruned = sparsify(model, SparsityConfig(sparsity=0.9, schedule="agp"), train_set,
                      train_config=TrainConfig(epochs=4))
"""

from .magnitude import CRITERIA, MaskSet, magnitude_masks, prunable_layers
from .report import format_sparsity_report, sparsity_report
from .schedule import SCHEDULES, SparsityConfig, cubic_ramp, register_schedule, sparsify
from .storage import RelativeSparse, decode_positions, encode_relative, encode_sparse, from_csr, to_csr

__all__ = [
    "CRITERIA",
    "MaskSet",
    "RelativeSparse",
    "SCHEDULES",
    "SparsityConfig",
    "cubic_ramp",
    "decode_positions",
    "encode_relative",
    "encode_sparse",
    "format_sparsity_report",
    "from_csr",
    "magnitude_masks",
    "prunable_layers",
    "register_schedule",
    "sparsify",
    "sparsity_report",
    "to_csr",
]
