"""Data sets by name: ``register_dataset``, ``load_dataset`` and the ``--data`` argument.

A data set is registered as a function ``fn(root, **options) -> (train, test)``
returning two :class:`ImageSet` objects.  ``load_dataset`` caches that pair in
the process (keyed by name, root and options), then carves the requested
split out of it:

* ``"train"``: the training split, less the holdout samples;
* ``"holdout"``: ``holdout`` training samples reserved for calibration or
  validation, chosen class-balanced with a fixed seed so that they are the same
  in every run and never overlap "train";
* ``"test"``: the test split.

``subset=N`` then keeps a deterministic, class-balanced ``N``-sample subset
(chosen with ``seed``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os

import torch

from ..errors import UserError, unknown_choice
from ..nn import Registry
from .imageset import ImageSet, balanced_indices

__all__ = [
    "DATASETS",
    "SPLITS",
    "register_dataset",
    "list_datasets",
    "parse_data_arg",
    "load_dataset",
    "clear_cache",
    "data_base_dirs",
]

DATASETS = Registry("data set")  # name -> fn(root, **options) -> (train ImageSet, test ImageSet)
SPLITS = ("train", "holdout", "test")
HOLDOUT_SEED = 0  # fixed on purpose: holdout and train must not move between runs
ENV_VAR = "TORCHSLIM_DATA"


def register_dataset(name: str):
    """Decorator: register ``fn(root, **options) -> (train ImageSet, test ImageSet)`` as ``name``."""

    def decorator(fn):
        if name in DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Registered data set names, sorted."""
    return sorted(DATASETS)


def data_base_dirs() -> list[str]:
    """The base folders named by ``$TORCHSLIM_DATA`` (``os.pathsep``-separated)."""
    value = os.environ.get(ENV_VAR, "")
    return [os.path.expanduser(part) for part in value.split(os.pathsep) if part.strip()]


def parse_data_arg(arg: str) -> tuple[str, str | None]:
    """Split ``"name"`` or ``"name:DIR"`` into ``(name, DIR or None)``; the name must be registered."""
    text = str(arg).strip()
    name, sep, root = text.partition(":")
    name = name.strip()
    DATASETS[name]  # noqa: B018  # an unknown name is a UserError
    root = root.strip()
    if sep and not root:
        raise UserError(f"--data {text!r} has an empty directory after ':'; use --data {name} or --data {name}:DIR")
    return name, (os.path.expanduser(root) if root else None)


def _check_options(name: str, fn, options: dict) -> None:
    accepted = [p for p in inspect.signature(fn).parameters if p != "root"]
    for key in options:
        if key not in accepted:
            takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes none"
            raise UserError(f"data set {name} has no option {key!r}; {takes}")


@functools.lru_cache(maxsize=8)
def _cached_sets(name: str, root: str | None, env: str, options: tuple) -> tuple[ImageSet, ImageSet]:
    del env  # part of the cache key only: the default folders depend on it
    train, test = DATASETS[name](root, **dict(options))
    return train, test


def clear_cache() -> None:
    """Forget every data set loaded in this process."""
    _cached_sets.cache_clear()
    catalog.clear_cache()


def _check_count(value, what: str, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{what} must be a non-negative integer, got {value!r}; fix {flag}")
    return value


def _holdout_split(train: ImageSet, holdout: int, split: str, name: str) -> ImageSet:
    if holdout == 0:
        if split == "holdout":
            raise UserError(
                f"the holdout split of {name} is empty; pass --holdout K to reserve K training samples"
            )
        return train
    if holdout >= len(train):
        raise UserError(
            f"--holdout {holdout} leaves no training samples: {name} has {len(train)}; "
            f"use --holdout {len(train) - 1} or less"
        )
    held = balanced_indices(train.labels, holdout, HOLDOUT_SEED)
    if split == "holdout":
        return train.take(held, split="holdout")
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    return train.take(torch.nonzero(keep).flatten(), split="train")


def load_dataset(
    name: str,
    split: str = "train",
    root: str | None = None,
    holdout: int = 0,
    subset: int | None = None,
    seed: int = 0,
    **options,
) -> ImageSet:
    """Load one split of a registered data set: an in-memory :class:`ImageSet`, or
    for an image folder at 64 px and up an :class:`~torchslim.data.ImageFiles` read per batch.

    ``name`` may carry its folder (``"cifar10:/data/cifar"``).  ``options`` go to
    the data set's loader (``folder`` takes ``image_size``, ``grayscale``,
    ``stream`` and ``bad_images``).
    Repeated calls reuse the tensors read the first time: treat them as read-only.
    Raises :class:`UserError` (one line) for a bad name, split, size or data folder.
    """
    if root is None and ":" in str(name):
        name, root = parse_data_arg(name)
    else:
        DATASETS[name]  # noqa: B018  # an unknown name is a UserError
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    holdout = _check_count(holdout, "holdout size", "--holdout")
    if subset is not None and (_check_count(subset, "subset size", "--subset") == 0):
        raise UserError("subset size must be at least 1; fix --subset")
    _check_options(name, DATASETS[name], options)
    if root is not None:
        root = os.path.abspath(os.path.expanduser(str(root)))
    key = tuple(sorted(options.items()))
    train, test = _cached_sets(name, root, os.environ.get(ENV_VAR, ""), key)
    chosen = test if split == "test" else _holdout_split(train, holdout, split, name)
    if subset is not None:
        chosen = chosen.subset(subset, seed)
    # a fresh object each call (metadata edits stay local); the tensors may be shared with the cache
    return dataclasses.replace(chosen, classes=list(chosen.classes))


from . import catalog  # noqa: E402,F401  (registers the built-in data sets)
