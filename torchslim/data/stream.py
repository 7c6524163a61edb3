"""Image folders read batch by batch: :class:`ImageFiles` and its batches.

An :class:`ImageFiles` holds file paths and labels, never pixels.  It answers
what the rest of torchslim asks of an :class:`~torchslim.data.ImageSet`
(``input_shape``, ``labels``, ``mean``/``std``, ``take``, ``subset``), so
``fit``, ``evaluate`` and calibration take either.  :func:`stream_batches` reads
the images of one epoch with a ``torch.utils.data.DataLoader``: worker processes
decode and crop each batch (see :mod:`.preprocess`) and send back uint8
tensors, so memory holds a few batches whatever the size of the folder.

Sharding uses ``torch.utils.data.DistributedSampler`` (rank ``r`` of ``w`` takes
every ``w``-th index of the epoch's permutation, ``seed + epoch``).  Each
sample's crop and flip come from ``(seed, epoch, index)`` alone, so they do not
depend on the number of workers or ranks.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import UserError
from .folder import bad_image_error, report_skipped
from .imageset import balanced_indices
from .preprocess import default_resize_size

__all__ = ["ImageFiles", "stream_batches", "default_workers"]


def default_workers() -> int:
    """Decoding processes per loader: ``$TORCHSLIM_WORKERS``, else up to 4 (one per core)."""
    value = os.environ.get("TORCHSLIM_WORKERS")
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            raise UserError(f"TORCHSLIM_WORKERS must be a whole number, got {value!r}") from None
    return min(4, os.cpu_count() or 1)


@dataclass(eq=False)
class ImageFiles:
    """One split of an image folder as paths and labels; pixels are read per batch.

    ``image_size`` is the side of the square crop; ``resize_size`` the shorter
    side before the evaluation crop.  ``bad_images`` is ``"error"`` (stop with
    one line naming the file) or ``"skip"`` (leave it out of its batch, count it).
    """

    paths: list[str]
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    image_size: int
    resize_size: int = 0
    channels: int = 3
    classes: list[str] = field(default_factory=list)
    flip: bool = True
    split: str = "train"
    bad_images: str = "error"

    def __post_init__(self):
        if len(self.paths) != self.labels.shape[0]:
            raise ValueError(f"ImageFiles needs one label per file: {len(self.paths)} files, "
                             f"{self.labels.shape[0]} labels")
        self.paths = list(self.paths)
        self.labels = self.labels.to(torch.int64)
        self.resize_size = self.resize_size or default_resize_size(self.image_size)
        if self.resize_size < self.image_size:
            raise UserError(f"resize size {self.resize_size} is smaller than the crop {self.image_size}")
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"ImageFiles(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.channels}x{self.image_size}x{self.image_size}, classes={self.num_classes})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def take(self, indices, split: str | None = None) -> "ImageFiles":
        """A new ImageFiles with the samples at ``indices`` (same metadata)."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return replace(self, paths=[self.paths[i] for i in indices.tolist()], labels=self.labels[indices],
                       classes=list(self.classes), split=self.split if split is None else split)

    def subset(self, n: int, seed: int = 0) -> "ImageFiles":
        """A deterministic, class-balanced subset of ``n`` samples, as :meth:`ImageSet.subset`."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise UserError(f"subset size must be a positive integer, got {n!r}")
        if n > len(self):
            raise UserError(f"subset of {n} is larger than the {self.split} split of {self.name} "
                            f"({len(self)} samples); pass --subset {len(self)} or less")
        return self if n == len(self) else self.take(balanced_indices(self.labels, n, seed))


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """One draw seed per (seed, epoch, sample): the same crop in any worker, on any rank."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class _Decoder(Dataset):
    """Reads one sample per ``(index, draw seed)`` key; runs in the loader's worker processes."""

    def __init__(self, files: ImageFiles, augment: bool):
        self.paths, self.labels = files.paths, files.labels
        self.mode = "L" if files.channels == 1 else "RGB"
        self.size, self.resize, self.flip = files.image_size, files.resize_size, files.flip
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        from .decode import DECODE_ERRORS, eval_image, open_image, train_image  # lazy: Pillow loads in the workers

        index, draw_seed = key
        path = self.paths[index]
        try:
            with open_image(path) as image:
                if self.augment:
                    array = train_image(image, self.mode, self.size, random.Random(draw_seed), self.flip)
                else:
                    array = eval_image(image, self.mode, self.size, self.resize)
        except DECODE_ERRORS as exc:
            return None, index, f"{path}\0{str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)), index, None


def _collate(samples):
    """Stack the readable samples: (uint8 images, sample indices, [bad 'path\\0reason', ...])."""
    good = [(a, i) for a, i, bad in samples if bad is None]
    bad = [b for _, _, b in samples if b is not None]
    if not good:
        return None, torch.zeros(0, dtype=torch.int64), bad
    images = torch.from_numpy(np.stack([a for a, _ in good]))
    return images, torch.tensor([i for _, i in good], dtype=torch.int64), bad


class _Keys:
    """Batches of ``(index, draw seed)`` in sampler order (a batch sampler for the DataLoader)."""

    def __init__(self, order: list[int], batch_size: int, drop_last: bool, seed: int, epoch: int):
        self.order, self.batch_size, self.seed, self.epoch = order, batch_size, seed, epoch
        self.count = len(order) // batch_size if drop_last else -(-len(order) // batch_size)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for b in range(self.count):
            chunk = self.order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, _sample_seed(self.seed, self.epoch, i)) for i in chunk]


def shard_order(total: int, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """This rank's sample order for ``epoch``, from ``DistributedSampler``."""
    sampler = DistributedSampler(range(total), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


_REPORTED: set[str] = set()  # bad files already named on stderr in this process (one line, not one per epoch)


def stream_batches(files: ImageFiles, order: list[int], batch_size: int, augment: bool, seed: int, epoch: int,
                   drop_last: bool = False, workers: int | None = None, skipped: list | None = None):
    """Yield ``(uint8 images, labels)`` batches of ``files`` in ``order``, decoded by worker processes.

    An unreadable image stops with a one-line UserError, or (``bad_images="skip"``)
    is left out of its batch, appended to ``skipped`` and named once on stderr.
    """
    keys = _Keys(order, batch_size, drop_last, seed, epoch)
    workers = min(default_workers() if workers is None else workers, len(keys))
    # its own generator: starting the workers must not consume the global RNG (dropout, init)
    loader = DataLoader(_Decoder(files, augment), batch_sampler=keys, num_workers=workers,
                        collate_fn=_collate, prefetch_factor=2 if workers else None,
                        generator=torch.Generator().manual_seed(seed + epoch))
    skipped = [] if skipped is None else skipped
    before = len(skipped)
    for images, indices, bad in loader:
        for entry in bad:
            path, reason = entry.split("\0", 1)
            if files.bad_images != "skip":
                raise bad_image_error(path, OSError(reason))
            skipped.append(path)
        if images is not None:
            yield images, files.labels[indices]
    new = [path for path in skipped[before:] if path not in _REPORTED]
    if new:
        _REPORTED.update(new)
        report_skipped(len(new), new[0], f"{files.name}/{files.split}")
