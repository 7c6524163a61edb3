"""Measurement of every result: params, MACs, bytes on disk, latency.

Importing this subpackage rebinds ``torchslim.profile`` from the top-level function
to the subpackage, so the subpackage is callable with the same signature.
"""

import sys
import types

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


class _CallableModule(types.ModuleType):
    """``torchslim.profile(model, ...)`` keeps working after the subpackage is imported."""

    def __call__(self, model, input_shape=None, **kwargs):
        return profile_model(model, input_shape=input_shape, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
