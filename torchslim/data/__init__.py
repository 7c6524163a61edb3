"""Small image data sets held in memory, and a fast batched loader.

``load_dataset("fashion-mnist-32", split="train", holdout=5000, subset=2000)``
returns an :class:`ImageSet` (uint8 tensors plus mean/std and class names);
:class:`BatchLoader` turns it into normalised, optionally augmented and
sharded batches.  Importing this package reads no data.
"""

from .imageset import ImageSet
from .loader import BatchLoader
from .registry import clear_cache, list_datasets, load_dataset, parse_data_arg, register_dataset

__all__ = [
    "ImageSet",
    "BatchLoader",
    "load_dataset",
    "list_datasets",
    "parse_data_arg",
    "register_dataset",
    "clear_cache",
]
