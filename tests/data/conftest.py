"""Fixtures writing small data sets in the exact on-disk formats (IDX, CIFAR pickles, image folders)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from .data_testfiles import cifar_batch, dump, id_images, idx_bytes, write_bytes

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def make_idx_dir(tmp_path):
    """Write train/t10k IDX files; returns (dir, train_images, train_labels, test_images, test_labels)."""

    def make(name="idx", n_train=40, n_test=20, gz=True, num_classes=10):
        directory = tmp_path / name
        directory.mkdir()
        train_images, test_images = id_images(n_train), id_images(n_test, offset=n_train)
        train_labels = (np.arange(n_train) % num_classes).astype(np.uint8)
        test_labels = (np.arange(n_test) % num_classes).astype(np.uint8)
        for prefix, images, labels in (("train", train_images, train_labels), ("t10k", test_images, test_labels)):
            write_bytes(directory / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
            write_bytes(directory / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
        return str(directory), train_images, train_labels, test_images, test_labels

    return make


@pytest.fixture
def make_cifar10(tmp_path):
    """Write a tiny cifar-10-batches-py folder; returns (parent dir, {file: batch dict}, names)."""

    def make(n_per_batch=3, n_test=4):
        directory = tmp_path / "cifar-10-batches-py"
        directory.mkdir()
        batches = {}
        for i in range(1, 6):
            batches[f"data_batch_{i}"] = cifar_batch(n_per_batch, b"labels", 10, seed=i)
        batches["test_batch"] = cifar_batch(n_test, b"labels", 10, seed=99)
        for name, batch in batches.items():
            dump(directory / name, batch)
        names = [f"class{i}" for i in range(10)]
        dump(directory / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
        return str(tmp_path), batches, names

    return make


@pytest.fixture
def make_cifar100(tmp_path):
    """Write a tiny cifar-100-python folder; returns (folder, {file: batch dict}, fine names)."""

    def make(n_train=12, n_test=5):
        directory = tmp_path / "cifar-100-python"
        directory.mkdir()
        batches = {"train": cifar_batch(n_train, b"fine_labels", 100, seed=1),
                   "test": cifar_batch(n_test, b"fine_labels", 100, seed=2)}
        for batch in batches.values():
            batch[b"coarse_labels"] = [v // 5 for v in batch[b"fine_labels"]]
        for name, batch in batches.items():
            dump(directory / name, batch, protocol=4)
        names = [f"fine{i}" for i in range(100)]
        meta = {b"fine_label_names": [n.encode() for n in names],
                b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
        dump(directory / "meta", meta, protocol=4)
        return str(directory), batches, names

    return make


COLOURS = {"cat": (255, 0, 0), "ant": (0, 255, 0), "bee": (0, 0, 255)}


@pytest.fixture
def make_folder(tmp_path):
    """Write solid-colour images under root[/split]/<class>/; returns the root."""
    from PIL import Image

    def make(counts=None, splits=(None,), size=(16, 12), name="images"):
        counts = counts or {"cat": 5, "ant": 5, "bee": 5}
        root = tmp_path / name
        for split in splits:
            base = root / split if split else root
            for cls, count in counts.items():
                os.makedirs(base / cls, exist_ok=True)
                for i in range(count):
                    fmt = ("png", "jpg", "bmp")[i % 3]
                    Image.new("RGB", size, COLOURS[cls]).save(base / cls / f"{i:03d}.{fmt}")
        return str(root)

    return make


@pytest.fixture
def fashion_dir(monkeypatch):
    if not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    monkeypatch.delenv("TORCHSLIM_DATA", raising=False)
    return FASHION_MNIST_DIR
