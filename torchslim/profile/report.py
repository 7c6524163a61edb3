"""One call that measures a model: params, MACs, bytes on disk, latency, per-layer table."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from torch import nn

from .counting import count_macs, count_params, layer_table
from .latency import compare_latency


@dataclass
class Profile:
    params: int
    macs: int
    size_bytes: int
    latency_ms: float  # batch-1 median
    input_shape: list
    threads: int
    batch_latency_ms: dict = field(default_factory=dict)  # {batch size: median ms}
    layers: list = field(default_factory=list)

    def to_dict(self, layers: bool = False) -> dict:
        data = asdict(self)
        if not layers:
            data.pop("layers")
        return data


def serialized_size(model: nn.Module) -> int:
    """Bytes that :func:`torchslim.save` would write for ``model``."""
    from safetensors.torch import save as st_save  # lazy: safetensors loads on the first read or write

    from ..io.serialize import _state_tensors, model_bytes  # lazy: io loads only to count bytes on disk

    if hasattr(model, "torchslim_arch"):
        return len(model_bytes(model))
    return len(st_save(_state_tensors(model.state_dict())))


def profile_model(
    model: nn.Module,
    input_shape=None,
    path=None,
    batch_sizes=(1, 32),
    threads: int | None = None,
    repeats: int = 30,
    per_layer: bool = True,
) -> Profile:
    """Measure ``model`` on inputs of ``input_shape`` (defaults to ``model.input_shape``).

    ``size_bytes`` is the size of ``path`` when given, else of the file
    :func:`torchslim.save` would write.
    """
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or (3, 32, 32))
    model.eval()
    timings = {}
    used_threads = None
    for batch in batch_sizes:
        result = compare_latency({"m": model}, input_shape, batch_size=batch, threads=threads, repeats=repeats)
        timings[int(batch)] = result["m"]["median_ms"]
        used_threads = result["threads"]
    size = os.path.getsize(path) if path else serialized_size(model)
    return Profile(
        params=count_params(model),
        macs=count_macs(model, input_shape),
        size_bytes=size,
        latency_ms=timings.get(1, next(iter(timings.values()))),
        input_shape=list(input_shape),
        threads=used_threads,
        batch_latency_ms=timings,
        layers=layer_table(model, input_shape) if per_layer else [],
    )


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}T"


def format_profile(profile: Profile, title: str = "") -> str:
    """A readable per-layer table followed by the totals."""
    lines = [title] if title else []
    if profile.layers:
        width = max(len(r["name"]) for r in profile.layers)
        lines.append(f"{'layer':<{width}}  {'type':<14} {'weight':<16} {'params':>9} {'MACs':>9}")
        for row in profile.layers:
            lines.append(
                f"{row['name']:<{width}}  {row['type']:<14} {row['shape']:<16} "
                f"{_human(row['params']):>9} {_human(row['macs']):>9}"
            )
    batches = ", ".join(f"batch {b}: {ms:.3f} ms" for b, ms in profile.batch_latency_ms.items())
    lines.append(
        f"params {profile.params:,}  MACs {profile.macs:,}  size {profile.size_bytes:,} B  "
        f"input {'x'.join(map(str, profile.input_shape))}  latency ({profile.threads} threads) {batches}"
    )
    return "\n".join(lines)
