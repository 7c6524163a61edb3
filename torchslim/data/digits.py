"""scikit-learn's 8x8 handwritten digits (1797 images), always at hand.

Pixel values 0..16 are scaled to 0..255.  The 80/20 train/test split is
stratified per class with a fixed seed, so it never changes between runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .imageset import stratified_split

__all__ = ["load_digits_arrays"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_arrays():
    """Returns ``(train_images, train_labels, test_images, test_labels, class_names)``
    with uint8 images ``N x 1 x 8 x 8``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "the digits data set needs scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`"
        ) from None
    bunch = load_digits()
    scaled = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    images = torch.from_numpy(np.clip(scaled, 0, 255).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    names = [str(i) for i in range(10)]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], names
