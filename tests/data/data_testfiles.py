"""Small data files in the exact on-disk formats (IDX, CIFAR pickles), written by hand for the tests."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written out by hand: 00 00 08 ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_bytes(path, payload: bytes, gz: bool = False) -> str:
    path = str(path) + (".gz" if gz else "")
    with open(path, "wb") as handle:
        handle.write(gzip.compress(payload) if gz else payload)
    return path


def id_images(n: int, size: int = 28, offset: int = 0) -> np.ndarray:
    """Random-looking images whose first two pixels spell out their index (so samples can be told apart)."""
    rng = np.random.default_rng(offset + 1)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0] = ids // 256
    images[:, 0, 1] = ids % 256
    return images


def image_ids(images) -> list[int]:
    """Inverse of :func:`id_images` for N x C x H x W tensors."""
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


def cifar_batch(n: int, label_key: bytes, num_classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def dump(path, obj, protocol=2) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)


FORMATS = ("jpg", "png", "webp")


def id_colour(index: int) -> tuple[int, int, int]:
    """A colour that spells ``index`` (red = low byte, green = high byte), to tell decoded samples apart."""
    return index % 256, index // 256, 77


def colour_id(rgb) -> int:
    return int(rgb[0]) + 256 * int(rgb[1])


def write_id_folder(root, classes: int, per_class: int, size=(40, 30)) -> list[str]:
    """``root/c<k>/<i>.png``: solid lossless images whose colour spells their global index; returns paths."""
    from PIL import Image

    paths = []
    for k in range(classes):
        folder = os.path.join(str(root), f"c{k}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            path = os.path.join(folder, f"{len(paths):04d}.png")
            Image.new("RGB", size, id_colour(len(paths))).save(path)
            paths.append(path)
    return paths
