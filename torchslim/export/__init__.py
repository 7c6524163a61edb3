"""Export: the packed container (real compressed bytes, checksummed), bit-packing
utilities, the per-layer packer registry, and ONNX export checked with onnxruntime.

    from torchslim.export import save_packed, load_packed, register_packer
    size = export(model, ExportConfig(format="onnx"), path="model.onnx")["size_bytes"]
"""

from .api import EXPORT_FORMATS, ExportConfig, export
from .bitpack import (bits_for, pack_codes, pack_signs, pack_ternary, packed_nbytes, unpack_codes, unpack_signs,
                      unpack_ternary)
from .packed import is_packed, load_packed, pack_model, packed_size, read_packed_header, save_packed
from .registry import PACKERS, PackOptions, find_packer, register_packer

__all__ = [
    "EXPORT_FORMATS",
    "ExportConfig",
    "export",
    "PACKERS",
    "PackOptions",
    "bits_for",
    "find_packer",
    "is_packed",
    "load_packed",
    "pack_codes",
    "pack_model",
    "pack_signs",
    "pack_ternary",
    "packed_nbytes",
    "packed_size",
    "read_packed_header",
    "register_packer",
    "save_packed",
    "unpack_codes",
    "unpack_signs",
    "unpack_ternary",
]
