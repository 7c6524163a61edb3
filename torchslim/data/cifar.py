"""CIFAR-10 and CIFAR-100 in the "python version" layout.

Each batch file is a pickled dict with bytes keys: ``b'data'`` (``N x 3072``
uint8, channel-major: 1024 red, 1024 green, then 1024 blue values, each plane
row-major 32x32) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'``
(CIFAR-100).  The pickles are read with an unpickler that only builds plain
containers and numpy arrays, so a malicious file cannot run code.
"""

from __future__ import annotations

import builtins
import codecs
import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

__all__ = ["CifarLayout", "CIFAR10", "CIFAR100", "find_cifar_dir", "load_cifar", "safe_unpickle"]


@dataclass(frozen=True)
class CifarLayout:
    """File names and keys of one CIFAR variant."""

    name: str
    folder: str  # name of the folder inside the archive
    archive: str  # the archive users usually download
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int


CIFAR10 = CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
)
CIFAR100 = CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The numpy callables an array pickle needs, under the module names that
    numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) write."""
    try:
        from numpy._core import multiarray, numeric  # lazy: numpy 2 or 1 layout, for pickles
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # lazy: numpy 2 or 1 layout, for pickles
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


_BUILTINS = {
    name: getattr(builtins, name)
    for name in ("set", "frozenset", "list", "dict", "tuple", "bytes", "bytearray", "str", "int", "float",
                 "complex", "bool", "slice", "range")
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only plain builtins and numpy array reconstruction."""

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "_codecs" and name == "encode":  # bytes pickled with protocol < 3
            return codecs.encode
        found = _numpy_globals().get((module, name))
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(path: str):
    """Unpickle ``path`` (``encoding='bytes'``) allowing only containers and numpy arrays.

    A file that is corrupt, or that asks for any other global (code), is a
    :class:`UserError` naming the file.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: not a valid CIFAR pickle ({exc}); download and extract it again") from None
    except Exception as exc:  # a corrupt pickle can fail in many ways
        raise UserError(
            f"{path}: corrupt CIFAR pickle ({type(exc).__name__}: {exc}); download and extract it again"
        ) from None


def find_cifar_dir(root: str, layout: CifarLayout) -> str:
    """``root`` itself if it holds the batch files, else ``root/<layout.folder>``."""
    first = layout.train_files[0]
    for candidate in (root, os.path.join(root, layout.folder)):
        if os.path.isfile(os.path.join(candidate, first)):
            return candidate
    hint = f"pass --data {layout.name}:DIR where DIR holds {first} or a {layout.folder} folder"
    if os.path.isfile(os.path.join(root, layout.archive)):
        hint = f"extract it first: tar xzf {os.path.join(root, layout.archive)} -C {root}"
    if not os.path.isdir(root):
        raise UserError(f"{layout.name} not found: {root} does not exist; {hint}")
    raise UserError(f"{layout.name} not found in {root} (looked for {first} and {layout.folder}/{first}); {hint}")


def _read_batch(path: str, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise UserError(f"{layout.name}: missing {path}; the folder needs all batch files of {layout.folder}")
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise UserError(f"{path}: expected a dict in a CIFAR batch, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    label_key = layout.label_key.decode()
    for key in ("data", label_key):
        if key not in batch:
            raise UserError(f"{path}: missing key {key!r} (found {sorted(map(str, batch))}); is this {layout.name}?")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(f"{path}: 'data' must be a uint8 N x 3072 array, found {type(data).__name__} {shape}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"{path}: {label_key!r} must be a list of integers") from None
    if labels.shape[0] != data.shape[0]:
        raise UserError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise UserError(
            f"{path}: labels must be in 0..{layout.num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _read_split(directory: str, files: tuple[str, ...], layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(os.path.join(directory, name), layout) for name in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else np.ascontiguousarray(parts[0][0])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


def _class_names(directory: str, layout: CifarLayout) -> list[str]:
    path = os.path.join(directory, layout.meta_file)
    if not os.path.isfile(path):
        if layout is CIFAR10:
            return list(CIFAR10_NAMES)
        return [str(i) for i in range(layout.num_classes)]
    meta = safe_unpickle(path)
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if names is None and isinstance(meta, dict):
        names = meta.get(layout.names_key.decode())
    if not isinstance(names, (list, tuple)) or len(names) != layout.num_classes:
        raise UserError(
            f"{path}: expected {layout.num_classes} names under {layout.names_key.decode()!r}; "
            "download and extract it again"
        )
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(root: str, layout: CifarLayout):
    """Read a CIFAR folder: returns ``(train_images, train_labels, test_images,
    test_labels, class_names)``; images uint8 ``N x 3 x 32 x 32``."""
    directory = find_cifar_dir(root, layout)
    train_images, train_labels = _read_split(directory, layout.train_files, layout)
    test_images, test_labels = _read_split(directory, layout.test_files, layout)
    return train_images, train_labels, test_images, test_labels, _class_names(directory, layout)
