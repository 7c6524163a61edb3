"""``BatchLoader``: batches straight from an in-memory :class:`ImageSet`.

Each batch is one gather from the uint8 images, an optional vectorised
augmentation (random crop, horizontal flip) and one fused normalisation, so a
whole epoch costs a few tensor ops per batch instead of a Python call per
sample.  Shuffling and sharding follow ``DistributedSampler``: the permutation
comes from ``seed + epoch``, is padded by wrapping to a multiple of
``world_size``, and rank ``r`` takes every ``world_size``-th index from ``r``.

Given an :class:`~torchslim.data.stream.ImageFiles` (a large image folder)
instead, the same loader reads each batch from disk in worker processes, with
``DistributedSampler`` choosing the indices and the standard random resized
crop and flip as augmentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError
from .imageset import ImageSet
from .stream import ImageFiles, shard_order, stream_batches
from .transforms import normalize_uint8, random_crop_flip

__all__ = ["BatchLoader"]


def _mixed_seed(*parts: int) -> int:
    """One 64-bit seed from several integers (independent streams for rank/epoch)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class BatchLoader:
    """Iterate ``(x, y)`` batches of ``imageset``: x float32 normalised N x C x H x W, y int64.

    ``augment`` applies a random crop with ``H // 8`` pixels of zero padding and,
    when ``imageset.flip``, a random horizontal flip.  Everything is
    deterministic for a given ``seed`` and epoch (see :meth:`set_epoch`);
    iterating the same epoch twice gives the same batches.
    """

    def __init__(
        self,
        imageset: ImageSet,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        workers: int | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch size must be a positive integer, got {batch_size!r}; fix --batch-size")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader: rank {rank} is not in 0..{world_size - 1}")
        self.imageset = imageset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.workers = workers  # decoding processes for ImageFiles (None: the default)
        self.skipped: list[str] = []  # unreadable files left out so far (ImageFiles, --bad-images skip)
        self.padding = imageset.input_shape[1] // 8
        if drop_last and 0 < self.num_samples < batch_size:  # would train on nothing at all
            each = f" ({self.num_samples} per process)" if world_size > 1 else ""
            raise UserError(f"the {imageset.split} split of {imageset.name} has {len(imageset)} images{each}, "
                            f"fewer than one batch of {batch_size}; lower --batch-size or add images")

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before ``drop_last``)."""
        return math.ceil(len(self.imageset) / self.world_size) if len(self.imageset) else 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """The sample indices this rank visits in the current epoch, in order."""
        total = len(self.imageset)
        if isinstance(self.imageset, ImageFiles):
            return torch.tensor(shard_order(total, self.shuffle, self.seed, self.epoch, self.rank, self.world_size),
                                dtype=torch.int64)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(total, generator=generator)
        else:
            order = torch.arange(total)
        padded = self.num_samples * self.world_size
        if padded > total:
            repeats = math.ceil(padded / total)
            order = order.repeat(repeats)[:padded]
        return order[self.rank : padded : self.world_size]

    def _stream(self):
        data = self.imageset
        order = self.indices().tolist()
        batches = stream_batches(data, order, self.batch_size, self.augment, self.seed, self.epoch,
                                 drop_last=self.drop_last, workers=self.workers, skipped=self.skipped)
        for images, labels in batches:
            yield normalize_uint8(images, data.mean, data.std), labels

    def __iter__(self):
        if isinstance(self.imageset, ImageFiles):
            yield from self._stream()
            return
        data = self.imageset
        mean, std = data.mean, data.std
        flip = self.augment and data.flip
        generator = torch.Generator().manual_seed(_mixed_seed(self.seed, self.epoch, self.rank))
        order = self.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            images = data.images.index_select(0, batch)
            if self.augment:
                images = random_crop_flip(images, self.padding, flip, generator)
            yield normalize_uint8(images, mean, std), data.labels.index_select(0, batch)

    def __repr__(self) -> str:
        return (
            f"BatchLoader({self.imageset.name}/{self.imageset.split}, n={len(self.imageset)}, "
            f"batch_size={self.batch_size}, batches={len(self)}, shuffle={self.shuffle}, "
            f"augment={self.augment}, rank={self.rank}/{self.world_size})"
        )
