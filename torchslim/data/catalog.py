"""The built-in data sets: MNIST-style IDX sets, CIFAR, image folders and digits.

Each entry returns ``(train, test)`` ImageSets sharing one mean/std.  Known sets
use their published constants; derived shapes (the ``-32`` variants, folders,
digits) compute exact statistics from their own training split.
"""

from __future__ import annotations

import functools
import os

import torch

from ..errors import UserError
from .cifar import CIFAR10, CIFAR100, CifarLayout, load_cifar
from .digits import load_digits_arrays
from .folder import check_enough, check_headers, check_image_size, folder_files, load_folder
from .idx import find_idx, load_idx_split
from .imageset import ImageSet, channel_stats
from .preprocess import default_stats
from .registry import data_base_dirs, register_dataset
from .stream import ImageFiles
from .transforms import pad_to, resize_to, to_channels

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DEFAULT_ROOTS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IDX_PROBE = "train-images-idx3-ubyte"


def _pair(name, train_images, train_labels, test_images, test_labels, classes, flip, stats=None):
    """Build the (train, test) ImageSets; ``stats=None`` computes them from train."""
    mean, std = stats if stats is not None else channel_stats(train_images)
    common = dict(num_classes=len(classes), mean=mean, std=std, name=name, classes=list(classes), flip=flip)
    return (
        ImageSet(train_images, train_labels, split="train", **common),
        ImageSet(test_images, test_labels, split="test", **common),
    )


# --- MNIST and Fashion-MNIST ---------------------------------------------------------------


def _idx_dir(base: str, root: str | None) -> str:
    if root is not None:
        candidates = [root, os.path.join(root, "raw")]
    else:
        candidates = [os.path.join(b, base) for b in data_base_dirs()] + [DEFAULT_ROOTS[base]]
    for directory in candidates:
        if find_idx(directory, _IDX_PROBE) is not None:
            return directory
    looked = " or ".join(candidates[:1] if root is not None else candidates)
    if root is not None:
        fix = f"check the path: DIR in --data {base}:DIR must hold the four IDX files"
    elif base == "fashion-mnist":
        fix = f"install it with `apt-get install dataset-fashion-mnist` or pass --data {base}:DIR"
    else:
        fix = f"no copy is installed here; pass --data {base}:DIR with the four IDX files"
    raise UserError(f"{base} not found in {looked} (looked for {_IDX_PROBE}[.gz]); {fix}")


@functools.lru_cache(maxsize=4)
def _idx_tensors(directory: str) -> tuple[torch.Tensor, ...]:
    train_images, train_labels = load_idx_split(directory, "train")
    test_images, test_labels = load_idx_split(directory, "t10k")
    return tuple(torch.from_numpy(a.copy()) for a in (train_images, train_labels, test_images, test_labels))


def _idx_sets(base: str, root: str | None, size32: bool, classes: list[str], flip: bool):
    train_images, train_labels, test_images, test_labels = _idx_tensors(_idx_dir(base, root))
    train_images, test_images = train_images.unsqueeze(1), test_images.unsqueeze(1)
    if not size32:
        return _pair(base, train_images, train_labels, test_images, test_labels, classes, flip, STATS[base])
    train_images, test_images = pad_to(train_images, 32), pad_to(test_images, 32)
    mean, std = channel_stats(train_images)  # the zero border lowers both
    stats = (mean * 3, std * 3)
    train_images, test_images = to_channels(train_images, 3), to_channels(test_images, 3)
    return _pair(base + "-32", train_images, train_labels, test_images, test_labels, classes, flip, stats)


@register_dataset("fashion-mnist")
def fashion_mnist(root=None):
    """Zalando's Fashion-MNIST, 1x28x28, 10 classes, 60000/10000."""
    return _idx_sets("fashion-mnist", root, False, FASHION_MNIST_CLASSES, flip=True)


@register_dataset("fashion-mnist-32")
def fashion_mnist_32(root=None):
    """Fashion-MNIST zero-padded to 32x32 and repeated to 3 channels (CIFAR-shaped)."""
    return _idx_sets("fashion-mnist", root, True, FASHION_MNIST_CLASSES, flip=True)


@register_dataset("mnist")
def mnist(root=None):
    """MNIST handwritten digits, 1x28x28, 10 classes, 60000/10000."""
    return _idx_sets("mnist", root, False, [str(i) for i in range(10)], flip=False)


@register_dataset("mnist-32")
def mnist_32(root=None):
    """MNIST zero-padded to 32x32 and repeated to 3 channels."""
    return _idx_sets("mnist", root, True, [str(i) for i in range(10)], flip=False)


# --- CIFAR ----------------------------------------------------------------------------------


def _cifar_root(layout: CifarLayout, root: str | None) -> str:
    if root is not None:
        return root
    for base in data_base_dirs():
        for candidate in (os.path.join(base, layout.name), base):
            if os.path.isdir(os.path.join(candidate, layout.folder)) or os.path.isfile(
                os.path.join(candidate, layout.train_files[0])
            ):
                return candidate
    bases = data_base_dirs()
    looked = f"not found under $TORCHSLIM_DATA ({', '.join(bases)})" if bases else "has no default folder"
    raise UserError(
        f"{layout.name} {looked}; pass --data {layout.name}:DIR where DIR holds {layout.folder} "
        f"(or set TORCHSLIM_DATA to a folder holding {layout.name}/{layout.folder})"
    )


def _cifar_sets(layout: CifarLayout, root: str | None):
    train_images, train_labels, test_images, test_labels, names = load_cifar(_cifar_root(layout, root), layout)
    tensors = [torch.from_numpy(a) for a in (train_images, train_labels, test_images, test_labels)]
    return _pair(layout.name, *tensors, names, flip=True, stats=STATS[layout.name])


@register_dataset("cifar10")
def cifar10(root=None):
    """CIFAR-10 python batches, 3x32x32, 10 classes, 50000/10000."""
    return _cifar_sets(CIFAR10, root)


@register_dataset("cifar100")
def cifar100(root=None):
    """CIFAR-100 python batches (fine labels), 3x32x32, 100 classes, 50000/10000."""
    return _cifar_sets(CIFAR100, root)


# --- image folders and digits ---------------------------------------------------------------


STREAM_FROM = 64  # folder images this size or larger are read per batch, with ImageNet-style preprocessing


def _folder_stream(root, image_size, grayscale, bad_images):
    train_paths, train_labels, test_paths, test_labels, names = folder_files(root)
    train_paths, train_labels = check_headers(train_paths, train_labels, bad_images, f"{root} (train)")
    test_paths, test_labels = check_headers(test_paths, test_labels, bad_images, f"{root} (test)")
    check_enough(train_labels, names, root, "train")
    check_enough(test_labels, names, root, "test")
    channels = 1 if grayscale else 3
    mean, std = default_stats(channels)
    common = dict(num_classes=len(names), mean=mean, std=std, name="folder", image_size=image_size,
                  channels=channels, classes=list(names), bad_images=bad_images)
    return (ImageFiles(train_paths, train_labels, split="train", **common),
            ImageFiles(test_paths, test_labels, split="test", **common))


@register_dataset("folder")
def folder(root=None, image_size: int = 32, grayscale: bool = False, stream: bool | None = None,
           bad_images: str = "error"):
    """``root/<class>/*.jpg|png|webp``, optional train/ and test/ (or val/).

    Small images (``image_size`` < 64, unless ``stream=True``) are decoded once,
    resized to a square and held in memory, normalised with the folder's own
    statistics.  Larger ones are read per batch (:class:`ImageFiles`): shorter
    side resized and centre-cropped, random resized crops for training, ImageNet
    mean/std.  ``bad_images`` is ``"error"`` or ``"skip"``.
    """
    if root is None:
        raise UserError(
            "the folder data set needs a directory; pass --data folder:DIR with DIR/<class>/*.png "
            "(optionally DIR/train and DIR/test)"
        )
    check_image_size(image_size)
    if stream if stream is not None else image_size >= STREAM_FROM:
        return _folder_stream(root, image_size, grayscale, bad_images)
    train_images, train_labels, test_images, test_labels, names = load_folder(root, image_size, grayscale, bad_images)
    return _pair("folder", train_images, train_labels, test_images, test_labels, names, flip=True)


def _digits_sets(root: str | None, size32: bool):
    if root is not None:
        name = "digits-32" if size32 else "digits"
        raise UserError(f"{name} comes with scikit-learn and takes no directory ({root}); use --data {name}")
    train_images, train_labels, test_images, test_labels, names = load_digits_arrays()
    if size32:
        train_images = to_channels(resize_to(train_images, 32), 3)
        test_images = to_channels(resize_to(test_images, 32), 3)
        return _pair("digits-32", train_images, train_labels, test_images, test_labels, names, flip=False)
    return _pair("digits", train_images, train_labels, test_images, test_labels, names, flip=False)


@register_dataset("digits")
def digits(root=None):
    """scikit-learn's handwritten digits, 1x8x8, 10 classes, 1438/359."""
    return _digits_sets(root, False)


@register_dataset("digits-32")
def digits_32(root=None):
    """digits resized to 32x32 (bilinear) and repeated to 3 channels."""
    return _digits_sets(root, True)


def clear_cache() -> None:
    """Forget the raw IDX arrays read so far."""
    _idx_tensors.cache_clear()
