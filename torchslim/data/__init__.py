"""Image data sets, and a fast batched loader.

``load_dataset("fashion-mnist-32", split="train", holdout=5000, subset=2000)``
returns an :class:`ImageSet` (uint8 tensors plus mean/std and class names);
an image folder at 64 px and up (``load_dataset("folder", root=DIR,
image_size=224)``) returns an :class:`ImageFiles` (paths, read per batch).
:class:`BatchLoader` turns either into normalised, optionally augmented and
sharded batches.  :func:`with_normalization` swaps in a model's own mean/std.
Importing this package reads no data.
"""

from .calibration import calibration_images, calibration_pairs
from .imageset import ImageSet
from .loader import BatchLoader
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, with_normalization
from .registry import clear_cache, list_datasets, load_dataset, parse_data_arg, register_dataset
from .stream import ImageFiles

__all__ = [
    "ImageSet",
    "ImageFiles",
    "BatchLoader",
    "calibration_images",
    "calibration_pairs",
    "with_normalization",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_dataset",
    "list_datasets",
    "parse_data_arg",
    "register_dataset",
    "clear_cache",
]
