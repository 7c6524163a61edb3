import sys

import numpy as np
import pytest
import torch

from torchslim.data import load_dataset
from torchslim.data.digits import load_digits_arrays
from torchslim.errors import UserError

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def test_digits_split_shapes_and_scaling():
    train = load_dataset("digits")
    test = load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert len(test) == 359  # round(20%) of every class
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10 and not train.flip
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # the 80/20 split is stratified: every class has 20% (rounded) in test
    counts = torch.bincount(torch.cat([train.labels, test.labels]), minlength=10).double()
    assert torch.equal(torch.bincount(test.labels, minlength=10), torch.round(counts * 0.2).long())
    # every image is sklearn's, scaled 0..16 -> 0..255
    bunch = sklearn_datasets.load_digits()
    scaled = torch.from_numpy(np.rint(bunch.images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    all_images = torch.cat([train.images, test.images])
    all_labels = torch.cat([train.labels, test.labels])
    order = torch.argsort(torch.cat([_positions(train, scaled), _positions(test, scaled)]))
    assert torch.equal(all_images[order], scaled)
    assert torch.equal(all_labels[order], torch.from_numpy(bunch.target).long())


def _positions(imageset, reference):
    """Index in ``reference`` of every image (some digits images repeat, so match them in order)."""
    where = {}
    for i, image in enumerate(reference.numpy()):
        where.setdefault(image.tobytes(), []).append(i)
    return torch.tensor([where[image.tobytes()].pop(0) for image in imageset.images.numpy()])


def test_digits_split_is_fixed():
    first = load_digits_arrays()
    second = load_digits_arrays()
    for a, b in zip(first[:4], second[:4]):
        assert torch.equal(a, b)


def test_digits_32_is_cifar_shaped():
    train = load_dataset("digits-32")
    small = load_dataset("digits")
    assert train.input_shape == (3, 32, 32) and len(train) == len(small)
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    assert torch.equal(train.labels, small.labels)
    # a constant 8x8 image stays constant when resized: compare the mean brightness
    assert abs(train.images.float().mean() / small.images.float().mean() - 1) < 0.05
    assert len(train.mean) == 3 and train.mean[0] == train.mean[1]


def test_digits_takes_no_directory(tmp_path):
    with pytest.raises(UserError) as error:
        load_dataset("digits", root=str(tmp_path))
    assert str(tmp_path) in str(error.value) and "--data digits" in str(error.value)


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError) as error:
        load_digits_arrays()
    assert "pip install scikit-learn" in str(error.value) and "\n" not in str(error.value)
