"""Deployment: bit-packed binary kernels for CPUs, behind ordinary PyTorch modules.

``compile(model)`` returns a copy whose compressed layers run on their runtime layers
(registered by type with ``register_lowering``): binary layers of a frozen quantized model
on packed kernels, product-quantized layers on lookup tables.  The native kernels are built
from source with the machine's compiler on first use (see :mod:`torchslim.deploy.build`),
with a PyTorch reference fallback.
"""

from .build import isa, native_library
from .compile import CompileConfig, compile, memory_report
from .kernels import binary_conv2d, pack_planes, pack_activation_signs, pack_weight_codes, reference_binary_conv2d
from .lowering import LOWERINGS, register_lowering
from .modules import PackedBinaryConv2d, PackedBinaryLinear

__all__ = [
    "CompileConfig",
    "LOWERINGS",
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
    "register_lowering",
]
