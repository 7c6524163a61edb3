"""Deployment: bit-packed binary kernels for CPUs, behind ordinary PyTorch modules.

``compile(model)`` swaps the binary layers of a frozen quantized model for packed
layers; the native kernels are built from source with the machine's compiler on
first use (see :mod:`torchslim.deploy.build`), with a PyTorch reference fallback.
"""

from .build import isa, native_library
from .compile import compile, memory_report
from .kernels import binary_conv2d, pack_planes, pack_activation_signs, pack_weight_codes, reference_binary_conv2d
from .modules import PackedBinaryConv2d, PackedBinaryLinear

__all__ = [
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "binary_conv2d",
    "compile",
    "isa",
    "memory_report",
    "native_library",
    "pack_planes",
    "pack_activation_signs",
    "pack_weight_codes",
    "reference_binary_conv2d",
]
