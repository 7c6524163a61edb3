"""Pillow decoding for image folders: one file to one preprocessed uint8 array.

Imported only when images are read (in loader workers), so importing
torchslim does not load Pillow.  The boxes come from :mod:`.preprocess`.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from .preprocess import center_crop_box, random_resized_crop_box, shorter_side_size

__all__ = ["DECODE_ERRORS", "FORMATS", "open_image", "to_mode", "eval_image", "train_image", "read_square"]

# what a broken, truncated or hostile file raises (never anything else: those are bugs)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
# Pillow picks a decoder from the file's content, not its name: only these may be tried, so a file
# named .jpg holding, say, EPS (which Pillow hands to Ghostscript) is refused, never run.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # JPEG includes multi-picture (MPO) camera files


def open_image(path: str) -> Image.Image:
    """``Image.open`` restricted to the folder formats (headers only; pixels load lazily)."""
    return Image.open(path, formats=FORMATS)


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``RGB`` or ``L``: grey, palette and RGBA (alpha dropped) included; 16-bit grey is scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I") and image.mode != mode:
        array = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((array >> 8 if array.max() > 255 else array).astype(np.uint8), "L")
    return image if image.mode == mode else image.convert(mode)


def _draft(image: Image.Image, mode: str, need: tuple[int, int]) -> tuple[float, float]:
    """Let JPEG decode at 1/2, 1/4 or 1/8 scale when that still gives ``need`` pixels (much faster
    on large photos); returns the (x, y) scale."""
    if image.format != "JPEG":
        return 1.0, 1.0
    full = image.size
    image.draft(mode, (max(1, need[0]), max(1, need[1])))
    return image.size[0] / full[0], image.size[1] / full[1]


def eval_image(image: Image.Image, mode: str, image_size: int, resize_size: int) -> np.ndarray:
    """Shorter side to ``resize_size``, centred ``image_size`` crop: an ``H x W (x C)`` uint8 array."""
    width, height = image.size
    target = shorter_side_size(width, height, resize_size)
    _draft(image, mode, target)
    image = to_mode(image, mode)
    if image.size != target:
        image = image.resize(target, _BILINEAR)
    return np.asarray(image.crop(center_crop_box(*target, image_size)), dtype=np.uint8)


def train_image(image: Image.Image, mode: str, image_size: int, rng: random.Random, flip: bool) -> np.ndarray:
    """Random resized crop to ``image_size``, then a flip with probability 1/2 (when ``flip``)."""
    width, height = image.size
    left, top, right, bottom = random_resized_crop_box(width, height, rng)
    mirror = flip and rng.random() < 0.5
    need = (math.ceil(width * image_size / (right - left)), math.ceil(height * image_size / (bottom - top)))
    sx, sy = _draft(image, mode, need)
    image = to_mode(image, mode)
    box = (left * sx, top * sy, right * sx, bottom * sy)
    image = image.resize((image_size, image_size), _BILINEAR, box=box)
    if mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


def read_square(path: str, size: int, mode: str) -> np.ndarray:
    """The whole image squashed to ``size x size`` (the small in-memory sets): ``C x H x W`` uint8."""
    with open_image(path) as image:
        image.load()
        image = to_mode(image, mode)
        if image.size != (size, size):
            image = image.resize((size, size), _BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
