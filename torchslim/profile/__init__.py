"""Measurement of every result: params, MACs, bytes on disk, latency."""

from .counting import count_macs, count_params, layer_table
from .latency import compare_latency, measure_latency, num_threads
from .report import Profile, format_profile, profile_model, serialized_size

__all__ = [
    "Profile",
    "compare_latency",
    "count_macs",
    "count_params",
    "format_profile",
    "layer_table",
    "measure_latency",
    "num_threads",
    "profile_model",
    "serialized_size",
]
