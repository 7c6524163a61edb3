"""IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is ``00 00 <type> <ndim>`` then ``ndim`` big-endian uint32 sizes,
then the values, big-endian, row-major.  Files may be gzipped (detected from
the content, not the name).  Anything malformed is a :class:`UserError` naming
the file.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import UserError

__all__ = ["read_idx", "find_idx", "load_idx_split", "write_idx"]

# IDX type code -> numpy dtype (big-endian where it matters).
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: corrupt gzip file ({exc}); download or install it again") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return data


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array in native byte order."""
    path = str(path)
    data = _read_bytes(path)
    fix = "download or install it again"
    if len(data) < 4:
        raise UserError(f"{path}: not an IDX file (only {len(data)} bytes); {fix}")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] == 0:
        raise UserError(f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()}); {fix}")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header ({len(data)} bytes, need {header}); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise UserError(
            f"{path}: {what}: {len(data)} bytes but the header (dims {'x'.join(map(str, dims))}) "
            f"needs {expected}; {fix}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or the name ends in .gz)."""
    codes = {dtype.newbyteorder(">"): code for code, dtype in IDX_TYPES.items()}
    big = np.asarray(array).astype(np.asarray(array).dtype.newbyteorder(">"))
    code = codes.get(big.dtype)
    if code is None:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype}")
    header = bytes([0, 0, code, big.ndim]) + np.asarray(big.shape, dtype=">u4").tobytes()
    payload = header + big.tobytes()
    if compress if compress is not None else str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    with open(path, "wb") as handle:
        handle.write(payload)


def find_idx(directory: str, stem: str) -> str | None:
    """Path of ``stem`` in ``directory``: tries NAME, NAME.gz, and the dotted
    variant some mirrors use (``train-images.idx3-ubyte``).  None if absent."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _require(directory: str, stem: str) -> str:
    path = find_idx(directory, stem)
    if path is None:
        raise UserError(f"{directory}: missing {stem}[.gz]; the folder needs all four IDX files")
    return path


def load_idx_split(directory: str, prefix: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<prefix>-images-idx3-ubyte`` and ``<prefix>-labels-idx1-ubyte``.

    Returns uint8 images ``N x H x W`` and int64 labels ``N``, checked to agree.
    """
    image_path = _require(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _require(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{image_path}: expected uint8 images N x H x W, got {images.dtype} with shape {images.shape}"
        )
    if labels.ndim != 1:
        raise UserError(f"{label_path}: expected a 1-D label file, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise UserError(
            f"{label_path}: {labels.shape[0]} labels for {images.shape[0]} images in {image_path}; "
            "the two files do not belong together"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{label_path}: labels must be in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return images, labels
