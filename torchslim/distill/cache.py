"""On-disk cache of an offline teacher's logits.

A cache lives in ``ROOT/<key>/``, where ``key`` hashes the teacher's weights and
architecture, the data set name and the augmentation seed.  Inside, each entry
maps the digest of one *normalised, augmented input image* (its exact float
bytes) to the teacher's logits for it.  A batch whose every image is already in
the cache costs no teacher forward at all; otherwise the teacher runs on the
whole batch and the new images are added.

When a cache helps, and when it is invalid:

* :class:`torchslim.data.BatchLoader` draws its crops and flips from the seed
  and the epoch, so a student trained with the same data set, seed, batch size
  and epoch count sees bit-identical batches: every run after the first hits.
  Without augmentation the images never change, so any seed and batch size hit.
* With **random augmentation that is not reproducible** (a different seed, more
  epochs than the first run, or a loader of your own drawing unseeded crops),
  the images are new every time: the cache never hits and only grows.  Turn it
  off there.  It is never *wrong* in that case (entries are addressed by the
  exact pixels), only useless.
* A different teacher (any weight or BN statistic changed) gets a different key,
  so a retrained teacher never reads stale logits.  Editing the files by hand,
  or a teacher whose forward is not a function of its weights (custom modules
  with hidden state), would make the cache invalid; clear the folder then.

Cached logits are the float32 values the teacher produced for the batch they
came in.  A live forward on a differently composed batch can differ in the last
bits (different matrix-multiply blocking), which training does not notice.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_path

__all__ = ["LogitCache", "teacher_fingerprint", "image_digests"]

DIGEST_BYTES = 16


def teacher_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the architecture spec and every state tensor (weights and BN statistics)."""
    digest = hashlib.sha256(json.dumps(getattr(model, "torchslim_arch", None), sort_keys=True,
                                       default=str).encode())
    digest.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def image_digests(x: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2b digest per sample of ``x`` (over its exact bytes)."""
    rows = x.detach().to("cpu", torch.float32).contiguous().numpy().reshape(x.shape[0], -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=DIGEST_BYTES).digest() for row in rows]


class LogitCache:
    """Teacher logits keyed by input image, persisted as safetensors shards.

    ``flush_every`` new entries are written as one shard (atomically), so an
    interrupted run keeps most of its work; call :meth:`flush` at the end.
    """

    def __init__(self, root, teacher: nn.Module, data_key: str = "", seed: int | None = None,
                 flush_every: int = 16384):
        self.key = hashlib.sha256(json.dumps(
            {"teacher": teacher_fingerprint(teacher), "data": data_key, "seed": seed}).encode()).hexdigest()[:20]
        self.folder = os.path.join(os.fspath(root), self.key)
        self.flush_every = flush_every
        self.hits = self.misses = 0
        self._index: dict[bytes, tuple[torch.Tensor, int]] = {}
        self._pending_digests: list[bytes] = []
        self._pending_logits: list[torch.Tensor] = []
        self._shards = 0
        self._load()

    def _load(self) -> None:
        if not os.path.isdir(self.folder):
            return
        for name in sorted(os.listdir(self.folder)):
            if not (name.startswith("shard-") and name.endswith(".safetensors")):
                continue
            tensors = load_file(os.path.join(self.folder, name))
            logits, digests = tensors["logits"], tensors["digests"].numpy()
            for row in range(digests.shape[0]):
                self._index[digests[row].tobytes()] = (logits, row)
            self._shards += 1

    def __len__(self) -> int:
        return len(self._index)

    def get(self, digests: list[bytes]) -> torch.Tensor | None:
        """Stacked logits for ``digests`` when every one is cached, else None."""
        found = [self._index.get(d) for d in digests]
        if any(entry is None for entry in found):
            return None
        return torch.stack([logits[row] for logits, row in found])

    def lookup(self, x: torch.Tensor, compute) -> torch.Tensor:
        """Logits for batch ``x``: from the cache when every image is in it, else ``compute(x)`` (and store)."""
        digests = image_digests(x)
        cached = self.get(digests)
        if cached is not None:
            self.hits += len(digests)
            return cached.to(x.device)
        live = compute(x)
        self.misses += len(digests)
        self.put(digests, live)
        return live

    def put(self, digests: list[bytes], logits: torch.Tensor) -> None:
        logits = logits.detach().to("cpu", torch.float32).contiguous()
        for row, digest in enumerate(digests):
            if digest not in self._index:
                self._index[digest] = (logits, row)
                self._pending_digests.append(digest)
                self._pending_logits.append(logits[row])
        if len(self._pending_digests) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the entries added since the last flush as a new shard."""
        if not self._pending_digests:
            return
        os.makedirs(self.folder, exist_ok=True)
        digests = torch.from_numpy(np.frombuffer(b"".join(self._pending_digests), dtype=np.uint8).copy())
        tensors = {"digests": digests.reshape(-1, DIGEST_BYTES), "logits": torch.stack(self._pending_logits)}
        name = f"shard-{self._shards:05d}-{os.getpid()}.safetensors"
        with atomic_path(os.path.join(self.folder, name)) as tmp:
            save_file(tensors, tmp)
        self._shards += 1
        self._pending_digests, self._pending_logits = [], []

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"entries": len(self), "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / total if total else 0.0, "folder": self.folder}
