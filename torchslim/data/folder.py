"""ImageFolder-style directories: ``root/<class>/<image>``.

Classes are the sub-folders, sorted by name.  When ``root/train`` exists it is
the training split, and ``root/test`` (or ``root/val``) the test split;
otherwise (or when no test folder exists) a deterministic, per-class 80/20
split is made.  Every image is decoded once with Pillow, converted to RGB (or
greyscale), resized to a square and kept in memory as uint8.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import UserError
from .imageset import stratified_split

__all__ = ["IMAGE_EXTENSIONS", "scan_folder", "decode_images", "load_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLIT_SEED = 0  # fixed: the 80/20 split must not move between runs
TEST_FRACTION = 0.2


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _image_files(directory: str) -> list[str]:
    found = []
    for current, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        found.extend(
            os.path.join(current, f) for f in sorted(files) if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def scan_folder(directory: str) -> dict[str, list[str]]:
    """``{class name: sorted image paths}`` for the class sub-folders that hold images."""
    try:
        names = sorted(n for n in os.listdir(directory) if _visible(n))
    except OSError as exc:
        raise UserError(f"cannot read image folder {directory}: {exc.strerror or exc}") from None
    classes = {}
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            files = _image_files(path)
            if files:
                classes[name] = files
    if not classes:
        raise UserError(
            f"no images found in {directory}: expected {directory}/<class>/*.png|jpg|jpeg|bmp "
            "(one sub-folder per class, optionally under train/ and test/)"
        )
    return classes


def _decode_one(path: str, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    _BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
    try:
        with Image.open(path) as image:
            image.load()
            image = image.convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), _BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot decode image {path} ({exc}); remove or replace the file") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_images(paths: list[str], size: int = 32, grayscale: bool = False) -> torch.Tensor:
    """Decode ``paths`` into a uint8 ``N x C x size x size`` tensor (C = 1 or 3)."""
    mode = "L" if grayscale else "RGB"
    channels = 1 if grayscale else 3
    if not paths:
        return torch.zeros((0, channels, size, size), dtype=torch.uint8)
    workers = min(4, os.cpu_count() or 1, len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(lambda p: _decode_one(p, size, mode), paths))
    return torch.from_numpy(np.stack(arrays))


def _flatten(classes: dict[str, list[str]], names: list[str], directory: str) -> tuple[list[str], torch.Tensor]:
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for name, files in classes.items():
        if name not in index:
            raise UserError(
                f"class folder {os.path.join(directory, name)} has no counterpart in the training split; "
                "every test class needs training images"
            )
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    return paths, torch.tensor(labels, dtype=torch.int64)


def _split_dirs(root: str) -> tuple[str, str | None]:
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        return root, None
    for name in ("test", "val"):
        if os.path.isdir(os.path.join(root, name)):
            return train, os.path.join(root, name)
    return train, None


def load_folder(root: str, image_size: int = 32, grayscale: bool = False):
    """Read an image folder: returns ``(train_images, train_labels, test_images,
    test_labels, class_names)``; images uint8 ``N x C x image_size x image_size``."""
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist; pass --data folder:DIR with DIR/<class>/*.png")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    train_dir, test_dir = _split_dirs(root)
    train_classes = scan_folder(train_dir)
    names = sorted(train_classes)
    train_paths, train_labels = _flatten(train_classes, names, train_dir)
    if test_dir is not None:
        test_paths, test_labels = _flatten(scan_folder(test_dir), names, test_dir)
    else:
        train_idx, test_idx = stratified_split(train_labels, TEST_FRACTION, SPLIT_SEED)
        test_paths = [train_paths[i] for i in test_idx.tolist()]
        train_paths = [train_paths[i] for i in train_idx.tolist()]
        train_labels, test_labels = train_labels[train_idx], train_labels[test_idx]
    train_images = decode_images(train_paths, image_size, grayscale)
    test_images = decode_images(test_paths, image_size, grayscale)
    return train_images, train_labels, test_images, test_labels, names
