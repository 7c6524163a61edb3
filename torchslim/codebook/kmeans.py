"""k-means in torch: a 1-D version for scalar weight sharing and a d-D one for PQ.

Scalar initialisations follow Deep Compression (Han et al. 2016, sec. 3.1):
``linear`` spaces the centroids evenly between the smallest and largest weight
(the paper's best: it keeps the rare large weights), ``density`` places them at
evenly spaced quantiles of the weights' distribution, ``random`` samples weights.
All randomness comes from an explicit seed.
"""

from __future__ import annotations

import torch

from ..errors import unknown_choice

INITS = ("linear", "density", "random")


def _init_1d(values: torch.Tensor, k: int, init: str, generator) -> torch.Tensor:
    if init == "linear":
        return torch.linspace(float(values.min()), float(values.max()), k, dtype=values.dtype)
    if init == "density":
        ordered = values.sort().values
        positions = torch.linspace(0, values.numel() - 1, k).round().long()
        return ordered[positions].clone()
    if init == "random":
        return values[torch.randperm(values.numel(), generator=generator)[:k]].sort().values.clone()
    raise unknown_choice("k-means initialisation", init, INITS)


def kmeans_1d(values: torch.Tensor, k: int, init: str = "linear", iters: int = 30,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster scalars; returns ``(centroids[k'], codes[n])`` with ``k' = min(k, n)``.

    Centroids are sorted; an empty cluster keeps its previous position.
    """
    values = values.detach().reshape(-1).float()
    k = max(1, min(int(k), values.numel()))
    generator = torch.Generator().manual_seed(seed)
    centroids = _init_1d(values, k, init, generator).sort().values
    codes = torch.zeros(values.numel(), dtype=torch.int64)
    for _ in range(max(1, iters)):
        bounds = (centroids[1:] + centroids[:-1]) / 2
        new_codes = torch.bucketize(values, bounds)
        counts = torch.bincount(new_codes, minlength=k)
        sums = torch.zeros(k, dtype=values.dtype).index_add_(0, new_codes, values)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values
        if torch.equal(new_codes, codes):
            break
        codes = new_codes
    codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, codes


def _nearest(vectors: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    out = []
    norms = (centroids * centroids).sum(1)
    for start in range(0, vectors.shape[0], chunk):
        part = vectors[start:start + chunk]
        out.append((norms[None, :] - 2 * part @ centroids.t()).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def _plus_plus(vectors: torch.Tensor, k: int, generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007)."""
    n = vectors.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    dist = ((vectors - vectors[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0:
            chosen.append(int(torch.randint(n, (1,), generator=generator)))
        else:
            chosen.append(int(torch.multinomial(dist / total, 1, generator=generator)))
        dist = torch.minimum(dist, ((vectors - vectors[chosen[-1]]) ** 2).sum(1))
    return vectors[chosen].clone()


def kmeans(vectors: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster rows of ``vectors[n, d]`` (k-means++ seeding); returns ``(centroids[k', d], codes[n])``."""
    vectors = vectors.detach().float()
    k = max(1, min(int(k), vectors.shape[0]))
    generator = torch.Generator().manual_seed(seed)
    centroids = _plus_plus(vectors, k, generator)
    codes = _nearest(vectors, centroids)
    for _ in range(max(1, iters)):
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, codes, vectors)
        centroids = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None], centroids)
        new_codes = _nearest(vectors, centroids)
        if torch.equal(new_codes, codes):
            break
        codes = new_codes
    return centroids, codes
