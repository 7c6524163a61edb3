"""``round_to="auto"``: the channel multiple that turns removed MACs into lower latency, per runtime.

CPU convolutions work on blocks of channels as wide as one SIMD register of floats: oneDNN
(eager torch) and ONNX Runtime's MLAS use 16-channel blocks with AVX-512 and 8 with AVX2, and
OpenVINO does the same.  A layer that keeps 37 channels then computes 48 (or 40), so MACs removed
inside a block buy no time.  ``benchmarks/prune_defaults.py`` prunes one model to one MAC target
with each multiple and times them interleaved per runtime; the table below holds its choices
(BENCHMARKS.md, section ``prune-defaults``).  A CPU level the table does not name gets 1: nothing
was measured there, so no channels are kept for nothing.

When ``auto``'s multiple cannot reach the target (a narrow model whose groups hold one block),
:func:`torchslim.prune.prune` halves it until the target is met.
"""

from __future__ import annotations

import torch

from ..errors import unknown_choice
from .latency import RUNTIMES

AUTO = "auto"

# (runtime, torch's CPU capability) -> multiple.  Measured on the AMD EPYC (AVX-512: 16-float
# registers) and inferred for AVX2 from the block size these runtimes use there (8 floats).
ROUND_TO = {
    ("torch", "AVX512"): 16, ("ort", "AVX512"): 16, ("openvino", "AVX512"): 16,
    ("torch", "AVX2"): 8, ("ort", "AVX2"): 8, ("openvino", "AVX2"): 8,
}


def cpu_simd() -> str:
    """torch's name for this CPU's vector level: ``AVX512``, ``AVX2``, ``DEFAULT``, ``SVE256``, ..."""
    return torch.backends.cpu.get_cpu_capability()


def round_to_for(runtime: str, simd: str | None = None) -> int:
    """The multiple ``auto`` picks for ``runtime`` on this CPU (or on ``simd``)."""
    if runtime not in RUNTIMES:
        raise unknown_choice("runtime", runtime, RUNTIMES)
    return ROUND_TO.get((runtime, simd or cpu_simd()), 1)


def describe(runtime: str, multiple: int) -> str:
    """One phrase saying where an automatic multiple came from."""
    return f"{multiple} (auto for {runtime} on {cpu_simd()})"
