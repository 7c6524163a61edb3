"""CPU/GPU latency: median of repeated runs after a warm-up, thread count fixed.

Shared machines drift, so :func:`compare_latency` times several models
interleaved (a, b, a, b, ...) and reports ratios from the same run.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch import nn


@contextlib.contextmanager
def num_threads(threads: int | None):
    """Temporarily fix torch's intra-op thread count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _time_once(model, x) -> float:
    _sync(x.device)
    start = time.perf_counter()
    model(x)
    _sync(x.device)
    return (time.perf_counter() - start) * 1000.0


@torch.inference_mode()
def compare_latency(
    models: dict, input_shape, batch_size: int = 1, threads: int | None = None, warmup: int = 5, repeats: int = 30,
    block: int = 1, pause_s: float = 0.0, warm_s: float = 0.0,
) -> dict:
    """Interleaved timing of several models on the same input (or, with ``input_shape`` a
    dict, on an input of its own shape each).

    ``block`` > 1 times each model ``block`` calls in a row per turn, after an untimed one,
    as a model serving request after request runs: with one call per turn, every call
    starts with the caches the other models left, which slows small models by a fixed
    amount that MACs do not explain.  Runtimes with threads of their own want a turn to
    start after ``pause_s`` (other runtimes' spinning threads go idle) and ``warm_s`` of
    untimed calls (a core idle for the pause runs slower at first); see
    :func:`torchslim.deploy.bench.compare_blocks`.

    Returns ``{name: {"median_ms", "p10_ms", "p90_ms"}}`` plus ``threads``.
    """
    samples = {name: [] for name in models}
    with num_threads(threads) as used:
        inputs = {}
        for name, model in models.items():
            model.eval()
            shape = input_shape[name] if isinstance(input_shape, dict) else input_shape
            inputs[name] = torch.randn(batch_size, *shape, device=_device_of(model))
            for _ in range(warmup):
                model(inputs[name])
        while samples and min(len(times) for times in samples.values()) < repeats:
            for name, model in models.items():
                if pause_s:
                    time.sleep(pause_s)
                if block > 1 or warm_s:
                    warm_until = time.perf_counter() + warm_s
                    model(inputs[name])
                    while time.perf_counter() < warm_until:
                        model(inputs[name])
                for _ in range(min(block, repeats - len(samples[name]))):
                    samples[name].append(_time_once(model, inputs[name]))
    result = {"threads": used, "batch_size": batch_size}
    for name, times in samples.items():
        times.sort()
        result[name] = {
            "median_ms": statistics.median(times),
            "p10_ms": times[len(times) // 10],
            "p90_ms": times[(len(times) * 9) // 10],
        }
    return result


def measure_latency(model: nn.Module, input_shape, batch_size: int = 1, threads=None, warmup=5, repeats=30) -> float:
    """Median latency in milliseconds of one forward pass at ``batch_size``."""
    return compare_latency({"m": model}, input_shape, batch_size, threads, warmup, repeats)["m"]["median_ms"]
