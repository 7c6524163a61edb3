"""ImageFolder-style directories: ``root/<class>/<image>``.

Classes are the sub-folders, sorted by name.  When ``root/train`` exists it is
the training split, and ``root/test`` (or ``root/val``) the test split;
otherwise (or when no test folder exists) a deterministic, per-class 80/20
split is made.  A class needs at least ``MIN_PER_CLASS`` images for that split.

:func:`folder_files` finds the files (shared by both ways of reading them);
:func:`load_folder` decodes every image once with Pillow, converts it to RGB (or
greyscale), resizes it to a square and keeps it in memory as uint8 (small
images); :mod:`torchslim.data.stream` reads large ones batch by batch instead.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import UserError
from .imageset import stratified_split

__all__ = ["IMAGE_EXTENSIONS", "BAD_IMAGES", "scan_folder", "folder_files", "check_headers", "decode_images",
           "load_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BAD_IMAGES = ("error", "skip")  # what an unreadable image does: stop with one line, or drop it and count
MIN_PER_CLASS = 3  # the smallest class the 80/20 split still gives a test image
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
            f"no images found in {directory}: expected {directory}/<class>/*.jpg|jpeg|png|webp|bmp "
            "(one sub-folder per class, optionally under train/ and test/)"
        )
    return classes


def bad_image_error(path: str, exc: BaseException) -> UserError:
    reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return UserError(f"cannot decode image {path} ({reason}); remove or replace the file, "
                     "or pass --bad-images skip")


def report_skipped(count: int, first: str, where: str) -> None:
    """One line on stderr for images left out under ``--bad-images skip``."""
    if count:
        print(f"torchslim: skipped {count} unreadable image{'s' * (count > 1)} in {where} (first: {first})",
              file=sys.stderr)


def _check_bad_images(bad_images: str) -> None:
    if bad_images not in BAD_IMAGES:
        raise UserError(f"unknown --bad-images {bad_images!r}; choose from: {', '.join(BAD_IMAGES)}")


def _decode_or_none(path: str, size: int, mode: str, bad_images: str):
    from .decode import DECODE_ERRORS, read_square  # lazy: Pillow loads on first read

    try:
        return read_square(path, size, mode)
    except DECODE_ERRORS as exc:
        if bad_images == "skip":
            return None
        raise bad_image_error(path, exc) from None


def decode_images(paths: list[str], size: int = 32, grayscale: bool = False, bad_images: str = "error"):
    """Decode ``paths`` into a uint8 ``N x C x size x size`` tensor (C = 1 or 3).

    With ``bad_images="skip"`` returns ``(images, kept)``: the readable images and
    a bool mask over ``paths``; with ``"error"`` an unreadable file is a UserError.
    """
    _check_bad_images(bad_images)
    mode = "L" if grayscale else "RGB"
    channels = 1 if grayscale else 3
    arrays = []
    if paths:
        workers = min(4, os.cpu_count() or 1, len(paths))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
            arrays = list(pool.map(lambda p: _decode_or_none(p, size, mode, bad_images), paths))
    kept = torch.tensor([a is not None for a in arrays], dtype=torch.bool)
    good = [a for a in arrays if a is not None]
    images = torch.from_numpy(np.stack(good)) if good else torch.zeros((0, channels, size, size), dtype=torch.uint8)
    return (images, kept) if bad_images == "skip" else images


def _header_ok(path: str):
    from .decode import DECODE_ERRORS, open_image  # lazy: Pillow loads on first read

    try:
        with open_image(path) as image:
            image.size  # noqa: B018  (Image.open parses the header only)
        return None
    except DECODE_ERRORS as exc:
        return exc


def check_headers(paths: list[str], labels: torch.Tensor, bad_images: str, where: str):
    """Open every file's header (cheap: no pixels decoded); an unreadable one is a UserError, or
    with ``bad_images="skip"`` is dropped with one line on stderr.  Returns the kept (paths, labels)."""
    _check_bad_images(bad_images)
    workers = min(8, (os.cpu_count() or 1) * 2, max(1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # file reads, mostly waiting on the disk
        errors = list(pool.map(_header_ok, paths))
    bad = [i for i, exc in enumerate(errors) if exc is not None]
    if not bad:
        return paths, labels
    if bad_images == "error":
        raise bad_image_error(paths[bad[0]], errors[bad[0]])
    report_skipped(len(bad), paths[bad[0]], where)
    keep = torch.ones(len(paths), dtype=torch.bool)
    keep[bad] = False
    return [p for p, k in zip(paths, keep.tolist()) if k], labels[keep]


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


def check_enough(labels: torch.Tensor, names: list[str], where: str, split: str) -> None:
    """One-line errors for a split with no images, or a class left without training images."""
    if labels.numel() == 0:
        raise UserError(f"the {split} split of {where} has no images")
    if split == "train":
        counts = torch.bincount(labels, minlength=len(names)).tolist()
        empty = [name for name, count in zip(names, counts) if count == 0]
        if empty:
            raise UserError(f"class {empty[0]!r} of {where} has no readable training images; "
                            "add images or remove the class folder")


def _auto_split(root: str, paths: list[str], labels: torch.Tensor, names: list[str]):
    counts = torch.bincount(labels, minlength=len(names)).tolist()
    small = [(name, count) for name, count in zip(names, counts) if count < MIN_PER_CLASS]
    if small:
        name, count = small[0]
        raise UserError(f"class {name!r} in {root} has {count} image{'s' * (count != 1)}; the automatic 80/20 "
                        f"train/test split needs at least {MIN_PER_CLASS} per class (or give {root}/train and "
                        f"{root}/test folders)")
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return ([paths[i] for i in train_idx.tolist()], labels[train_idx],
            [paths[i] for i in test_idx.tolist()], labels[test_idx])


def folder_files(root: str):
    """The files of an image folder: ``(train_paths, train_labels, test_paths, test_labels, class_names)``."""
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist; pass --data folder:DIR with DIR/<class>/*.png")
    train_dir, test_dir = _split_dirs(root)
    train_classes = scan_folder(train_dir)
    names = sorted(train_classes)
    train_paths, train_labels = _flatten(train_classes, names, train_dir)
    if test_dir is None:
        return (*_auto_split(root, train_paths, train_labels, names), names)
    test_paths, test_labels = _flatten(scan_folder(test_dir), names, test_dir)
    return train_paths, train_labels, test_paths, test_labels, names


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise UserError(f"image size must be a positive integer, got {image_size!r}; fix --image-size")
    return image_size


def _decoded_split(paths, labels, image_size, grayscale, bad_images, where):
    if bad_images == "error":
        return decode_images(paths, image_size, grayscale), labels
    images, kept = decode_images(paths, image_size, grayscale, "skip")
    if not bool(kept.all()):
        first = paths[int(torch.nonzero(~kept)[0])]
        report_skipped(int((~kept).sum()), first, where)
    return images, labels[kept]


def load_folder(root: str, image_size: int = 32, grayscale: bool = False, bad_images: str = "error"):
    """Read an image folder: returns ``(train_images, train_labels, test_images,
    test_labels, class_names)``; images uint8 ``N x C x image_size x image_size``."""
    check_image_size(image_size)
    _check_bad_images(bad_images)
    train_paths, train_labels, test_paths, test_labels, names = folder_files(root)
    train_images, train_labels = _decoded_split(train_paths, train_labels, image_size, grayscale, bad_images, root)
    test_images, test_labels = _decoded_split(test_paths, test_labels, image_size, grayscale, bad_images, root)
    check_enough(train_labels, names, root, "train")
    check_enough(test_labels, names, root, "test")
    return train_images, train_labels, test_images, test_labels, names
