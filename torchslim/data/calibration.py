"""Calibration samples drawn from a data set: one home for what pruning, quantization and export need.

- :func:`calibration_images`: the first images (after ``skip``), normalised, in order, inputs only:
  activation ranges, BatchNorm statistics, int8 calibration, the alternating update's targets;
- :func:`calibration_pairs`: shuffled (x, y) batches, seeded: the data criteria of pruning.
"""

from __future__ import annotations

from .loader import BatchLoader

__all__ = ["calibration_images", "calibration_pairs"]


def calibration_images(dataset, images: int = 1024, batch_size: int = 256, device="cpu", skip: int = 0) -> list:
    """``images`` images of ``dataset`` after the first ``skip`` (normalised, no augmentation) as batches."""
    loader = BatchLoader(dataset, batch_size=batch_size)
    batches, seen = [], -skip
    for x, _ in loader:
        if seen + len(x) <= 0:
            seen += len(x)
            continue
        x = x[max(0, -seen):]
        seen = max(seen, 0)
        batches.append(x[: images - seen].to(device))
        seen += len(batches[-1])
        if seen >= images:
            break
    return batches


def calibration_pairs(data, count: int, batch_size: int, seed: int = 0, device="cpu") -> list:
    """``count`` shuffled batches of (x, y) from an ImageSet, or the first ``count`` of any iterable of (x, y)."""
    if data is None:
        return []
    if hasattr(data, "labels") and hasattr(data, "input_shape"):
        data = BatchLoader(data, batch_size=batch_size, shuffle=True, seed=seed)
    batches = []
    for x, y in data:
        batches.append((x.to(device), y.to(device)))
        if len(batches) >= count:
            break
    return batches
