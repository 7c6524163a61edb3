"""``ImageSet``: a whole split of a small image data set, held in memory.

Images stay uint8 (``N x C x H x W``), labels int64; :class:`BatchLoader`
turns them into normalised float batches.  The helpers here pick samples
deterministically: :func:`balanced_indices` (class-balanced subsets and the
holdout split) and :func:`stratified_split` (per-class train/test split).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import UserError

__all__ = ["ImageSet", "balanced_indices", "stratified_split", "channel_stats"]


@dataclass(eq=False)
class ImageSet:
    """One split of a data set, materialised as tensors.

    ``mean`` and ``std`` are per channel in 0..1 units and are the same for every
    split of a data set (they come from its training split).  ``flip`` says
    whether a horizontal flip is a label-preserving augmentation (not for
    digits).  The tensors may be shared with an in-process cache: treat them as
    read-only.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    classes: list[str] = field(default_factory=list)
    flip: bool = False
    split: str = "train"

    def __post_init__(self):
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"ImageSet images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"ImageSet needs one label per image: {self.images.shape[0]} images, labels {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"ImageSet mean/std need {channels} values, got {self.mean} / {self.std}")
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (
            f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={c}x{h}x{w}, classes={self.num_classes})"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    def take(self, indices, split: str | None = None) -> "ImageSet":
        """A new ImageSet with the samples at ``indices`` (same metadata)."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return replace(
            self,
            images=self.images.index_select(0, indices),
            labels=self.labels.index_select(0, indices),
            classes=list(self.classes),
            split=self.split if split is None else split,
        )

    def subset(self, n: int, seed: int = 0) -> "ImageSet":
        """A deterministic, class-balanced subset of ``n`` samples (original order kept).

        The same ``seed`` always gives the same samples, and a smaller ``n`` gives
        a subset of a larger one.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise UserError(f"subset size must be a positive integer, got {n!r}")
        if n > len(self):
            raise UserError(
                f"subset of {n} is larger than the {self.split} split of {self.name} "
                f"({len(self)} samples); pass --subset {len(self)} or less"
            )
        if n == len(self):
            return self
        return self.take(balanced_indices(self.labels, n, seed))


def _rank_within_class(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the samples with ``seed``; return the permutation and, for each of
    its positions, how many samples of the same class come before it."""
    total = labels.shape[0]
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=generator)
    shuffled = labels[perm]
    order = torch.argsort(shuffled, stable=True)
    counts = torch.bincount(shuffled, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(total, dtype=torch.int64)
    rank[order] = torch.arange(total) - starts[shuffled[order]]
    return perm, rank


def balanced_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Pick ``n`` sample indices with as equal a count per class as possible.

    Classes are visited round-robin, each in a random order fixed by ``seed``;
    once a class runs out, the others fill the remaining places.  Returned sorted.
    """
    total = labels.shape[0]
    if n >= total:
        return torch.arange(total)
    perm, rank = _rank_within_class(labels, seed)
    key = rank * total + torch.arange(total)
    chosen = perm[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, test) with ``round(test_fraction * count)`` test
    samples from every class; deterministic for a ``seed``; both sorted."""
    perm, rank = _rank_within_class(labels, seed)
    counts = torch.bincount(labels, minlength=1).double()
    test_per_class = torch.round(counts * test_fraction).to(torch.int64)
    is_test = rank < test_per_class[labels[perm]]
    train = torch.sort(perm[~is_test]).values
    test = torch.sort(perm[is_test]).values
    return train, test


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images, in 0..1 units.

    Uses a 256-bin histogram per channel, so memory stays at one uint8 copy.
    """
    if images.shape[0] == 0:
        raise ValueError("channel_stats: no images")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        count = hist.sum()
        mean = (hist * values).sum() / count
        var = (hist * (values - mean) ** 2).sum() / count
        means.append(round(float(mean), 6))
        std = float(var.sqrt())
        stds.append(round(std, 6) if std > 1e-6 else 1.0)  # constant channel: leave it unscaled
    return tuple(means), tuple(stds)
