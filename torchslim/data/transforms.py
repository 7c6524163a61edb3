"""Tensor-level image transforms, applied to whole batches at once.

Images are ``N x C x H x W`` tensors.  The shape ops (:func:`pad_to`,
:func:`resize_to`, :func:`to_channels`) keep the dtype, so they work on the
uint8 arrays held in memory.  The augmentations (:func:`random_crop`,
:func:`random_flip`) take a ``torch.Generator`` and are vectorised over the
batch, so one call costs a few tensor ops whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "pad_to",
    "resize_to",
    "to_channels",
    "normalize",
    "normalize_uint8",
    "random_crop",
    "random_flip",
    "random_crop_flip",
]


def _size2(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"expected an N x C x H x W tensor, got shape {tuple(images.shape)}")


def pad_to(images: torch.Tensor, size) -> torch.Tensor:
    """Zero-pad ``images`` to ``size`` (int or (H, W)), keeping the content centred.

    An odd margin puts the extra row/column at the bottom/right.  28 -> 32 adds
    2 pixels on every side.
    """
    _check_images(images)
    height, width = _size2(size)
    n, c, h, w = images.shape
    if height < h or width < w:
        raise ValueError(f"pad_to: target {height}x{width} is smaller than the images ({h}x{w})")
    top, left = (height - h) // 2, (width - w) // 2
    out = images.new_zeros((n, c, height, width))
    out[:, :, top : top + h, left : left + w] = images
    return out


def resize_to(images: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to ``size`` (int or (H, W)); uint8 input gives rounded uint8 output."""
    _check_images(images)
    height, width = _size2(size)
    if tuple(images.shape[-2:]) == (height, width):
        return images
    x = images.float() if not images.is_floating_point() else images
    antialias = height < images.shape[-2] or width < images.shape[-1]
    out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Return ``images`` with ``channels`` channels; a grey image is repeated (1 -> 3)."""
    _check_images(images)
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.repeat(1, channels, 1, 1)
    raise ValueError(f"to_channels: cannot turn {have} channels into {channels}")


def _per_channel(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tuple(values), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for float images in 0..1 units."""
    _check_images(x)
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (0..255) to normalised float32: ``(images / 255 - mean) / std``."""
    _check_images(images)
    std_t = _per_channel(std, images)
    scale = 1.0 / (255.0 * std_t)
    shift = _per_channel(mean, images) / std_t
    return images.to(torch.float32).mul_(scale).sub_(shift)


def _crop_offsets(n: int, padding: int, generator) -> torch.Tensor:
    return torch.randint(0, 2 * padding + 1, (2, n), generator=generator)


def _flip_mask(n: int, generator, p: float = 0.5) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def _shifted_gather(x: torch.Tensor, padding: int, offsets: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """Crop each zero-padded image at its own (row, col) offset, mirrored where
    ``flip``: one ``gather`` over flattened planes."""
    n, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    width = w + 2 * padding
    offsets = offsets.to(device)
    rows = offsets[0].view(n, 1, 1) + torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w).expand(n, 1, w)
    if flip is not None:
        cols = torch.where(flip.to(device).view(n, 1, 1), w - 1 - cols, cols)
    cols = offsets[1].view(n, 1, 1) + cols
    flat = (rows * width + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels, then crop it back at a random offset.

    Every sample gets its own offset in ``[0, 2 * padding]`` along each axis (as
    torchvision's ``RandomCrop(size, padding)``), drawn from ``generator``.  The
    crop is one gather over the batch, not a Python loop.
    """
    _check_images(x)
    if padding <= 0:
        return x
    return _shifted_gather(x, padding, _crop_offsets(x.shape[0], padding, generator), None)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (one draw per sample)."""
    _check_images(x)
    chosen = torch.nonzero(_flip_mask(x.shape[0], generator, p)).flatten().to(x.device)
    out = x.clone()
    out[chosen] = x[chosen].flip(3)
    return out


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``random_flip(random_crop(x, padding, g), g)`` (same draws, same result) in one gather."""
    _check_images(x)
    if padding <= 0:
        return random_flip(x, generator) if flip else x
    offsets = _crop_offsets(x.shape[0], padding, generator)
    mask = _flip_mask(x.shape[0], generator) if flip else None
    return _shifted_gather(x, padding, offsets, mask)
