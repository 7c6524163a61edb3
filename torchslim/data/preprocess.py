"""Preprocessing geometry and normalisation statistics for image folders.

The geometry is the usual ImageNet recipe:

* **evaluation**: resize the shorter side to ``resize_size`` (by default
  ``floor(image_size / 0.875)``, 256 for 224) keeping the aspect ratio, then
  cut the centred ``image_size`` square;
* **training**: a random resized crop (a box covering 8%..100% of the area,
  aspect ratio 3/4..4/3, resized to ``image_size``) and a horizontal flip with
  probability 1/2.

Every random draw comes from a ``random.Random`` seeded per sample, so the same
seed, epoch and sample give the same crop in any worker.  :mod:`.decode` applies
these boxes with Pillow; normalisation (``mean``/``std``) happens later, on the
whole uint8 batch.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from ..errors import UserError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CROP_FRACTION",
    "default_stats",
    "check_stats",
    "parse_stats",
    "with_normalization",
    "default_resize_size",
    "shorter_side_size",
    "center_crop_box",
    "random_resized_crop_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # 224 of 256: the evaluation crop most published models use
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean/std; for one channel the average of the three (as grey-input models use)."""
    if channels == 1:
        return (round(sum(IMAGENET_MEAN) / 3, 6),), (round(sum(IMAGENET_STD) / 3, 6),)
    return IMAGENET_MEAN[:channels], IMAGENET_STD[:channels]


def check_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[tuple, tuple]:
    """Validate a per-channel mean/std pair; one value is repeated for every channel."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"--mean/--std need 1 or {channels} values for {channels}-channel images, "
                        f"got {len(mean)} and {len(std)}")
    if not all(math.isfinite(s) and s > 0 for s in std) or not all(math.isfinite(m) for m in mean):
        raise UserError(f"--std values must be positive and --mean finite (got mean {mean}, std {std})")
    return mean, std


def parse_stats(text: str, flag: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> a tuple of floats (``flag`` names the option in errors)."""
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if not values:
        raise UserError(f"{flag} must be comma-separated numbers such as 0.485,0.456,0.406 (got {text!r})")
    return values


def with_normalization(dataset, mean: Sequence[float], std: Sequence[float]):
    """A copy of ``dataset`` (an ImageSet or a streamed folder) normalised with ``mean``/``std``.

    This is how a model's own statistics (torchvision weights transforms, timm's
    ``pretrained_cfg``) or ``--mean/--std`` replace a data set's defaults.
    """
    mean, std = check_stats(mean, std, dataset.input_shape[0])
    return dataclasses.replace(dataset, mean=mean, std=std, classes=list(dataset.classes))


def default_resize_size(image_size: int) -> int:
    """The shorter side before the evaluation crop: ``floor(image_size / 0.875)``."""
    return int(math.floor(image_size / CROP_FRACTION + 1e-9))


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``size`` (long side truncated)."""
    if width <= height:
        return size, max(size, int(size * height / width))
    return max(size, int(size * width / height)), size


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the centred ``crop`` square (odd margins round half to even)."""
    left, top = int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))
    return left, top, left + crop, top + crop


def random_resized_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """A box of 8%..100% of the area with aspect 3/4..4/3 (ten tries, then the centred largest box)."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif aspect > RATIO[1]:
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h
