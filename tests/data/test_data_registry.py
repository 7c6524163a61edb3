import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from torchslim.data import ImageSet, list_datasets, load_dataset, parse_data_arg, register_dataset
from torchslim.data import registry
from torchslim.errors import UserError

from .data_testfiles import image_ids

EXPECTED_SHAPES = {
    "fashion-mnist": (1, 28, 28),
    "fashion-mnist-32": (3, 32, 32),
    "mnist": (1, 28, 28),
    "mnist-32": (3, 32, 32),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "digits": (1, 8, 8),
    "digits-32": (3, 32, 32),
    "folder": (3, 32, 32),
}


@pytest.fixture
def tiny_root(make_idx_dir, make_cifar10, make_cifar100, make_folder):
    """A folder with small data in the right format for every registered data set (None: built in)."""

    def root_for(name):
        base = name.removesuffix("-32")
        if base in ("mnist", "fashion-mnist"):
            return make_idx_dir(base)[0]
        if base == "cifar10":
            return make_cifar10()[0]
        if base == "cifar100":
            return make_cifar100()[0]
        if base == "folder":
            return make_folder()
        if base == "digits":
            return None
        raise AssertionError(f"add small test data for the new data set {name!r} here")

    return root_for


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_loads_consistently(name, tiny_root):
    if name.startswith("digits"):
        pytest.importorskip("sklearn")
    root = tiny_root(name)
    train = load_dataset(name, "train", root=root)
    test = load_dataset(name, "test", root=root)
    assert train.input_shape == test.input_shape == EXPECTED_SHAPES[name]
    assert train.name == test.name == name and train.split == "train" and test.split == "test"
    assert train.mean == test.mean and train.std == test.std
    assert len(train.mean) == len(train.std) == train.input_shape[0]
    assert all(0 < m < 1 for m in train.mean) and all(0 < s < 1 for s in train.std)
    assert len(train.classes) == train.num_classes
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < split.num_classes
    again = load_dataset(name, "train", root=root)
    assert again is not train and again.images is train.images  # tensors cached in-process


@pytest.mark.parametrize("name", [n for n in list_datasets() if not n.startswith("digits")])
def test_missing_data_is_one_line_naming_the_path(name, tmp_path):
    missing = str(tmp_path / "not-here")
    with pytest.raises(UserError) as error:
        load_dataset(name, root=missing)
    message = str(error.value)
    assert "\n" not in message and missing in message and name.removesuffix("-32") in message


def test_default_fashion_mnist_message(monkeypatch):
    monkeypatch.delenv("TORCHSLIM_DATA", raising=False)
    monkeypatch.setitem(registry.catalog.DEFAULT_ROOTS, "fashion-mnist", "/nonexistent/fashion-mnist")
    with pytest.raises(UserError) as error:
        load_dataset("fashion-mnist")
    assert str(error.value) == (
        "fashion-mnist not found in /nonexistent/fashion-mnist (looked for train-images-idx3-ubyte[.gz]); "
        "install it with `apt-get install dataset-fashion-mnist` or pass --data fashion-mnist:DIR"
    )


def test_env_var_base_is_searched_first(make_idx_dir, monkeypatch, tmp_path):
    directory, train_images, _, _, _ = make_idx_dir("mnist")
    monkeypatch.setenv("TORCHSLIM_DATA", str(tmp_path))
    train = load_dataset("mnist")
    assert torch.equal(train.images[:, 0], torch.from_numpy(train_images))
    assert train.mean == (0.1307,) and not train.flip


def test_mnist_32_pads_and_repeats(make_idx_dir):
    directory, train_images, train_labels, _, _ = make_idx_dir("mnist", gz=False)
    small = load_dataset("mnist", root=directory)
    big = load_dataset("mnist-32", root=directory)
    assert torch.equal(big.images[:, :, 2:30, 2:30], small.images.expand(-1, 3, -1, -1))
    assert int(big.images[:, :, :2].max()) == 0 and int(big.images[:, :, :, 30:].max()) == 0
    assert big.labels.tolist() == train_labels.tolist()
    # the statistics are those of the padded images
    padded = big.images.double() / 255
    assert abs(padded.mean().item() - big.mean[0]) < 1e-5
    assert abs(padded.std(unbiased=False).item() - big.std[0]) < 1e-5


def test_parse_data_arg():
    assert parse_data_arg("fashion-mnist") == ("fashion-mnist", None)
    assert parse_data_arg("cifar10:/data/cifar") == ("cifar10", "/data/cifar")
    assert parse_data_arg("folder:~/pics") == ("folder", os.path.expanduser("~/pics"))
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        parse_data_arg("cifar-10:/x")
    with pytest.raises(UserError, match="empty directory"):
        parse_data_arg("mnist:")


def test_unknown_names_and_bad_arguments(make_idx_dir):
    with pytest.raises(UserError, match="unknown data set 'fashionmnist'.*did you mean 'fashion-mnist'"):
        load_dataset("fashionmnist")
    directory = make_idx_dir("mnist")[0]
    with pytest.raises(UserError, match="unknown split 'valid'"):
        load_dataset("mnist", "valid", root=directory)
    with pytest.raises(UserError, match="holdout split of mnist is empty"):
        load_dataset("mnist", "holdout", root=directory)
    with pytest.raises(UserError, match="--holdout 39 or less"):
        load_dataset("mnist", root=directory, holdout=40)
    with pytest.raises(UserError, match="--holdout"):
        load_dataset("mnist", root=directory, holdout=-1)
    with pytest.raises(UserError, match="--subset 40 or less"):
        load_dataset("mnist", root=directory, subset=41)
    with pytest.raises(UserError, match="--subset"):
        load_dataset("mnist", root=directory, subset=0)
    with pytest.raises(UserError, match="no option"):
        load_dataset("mnist", root=directory, image_size=3)


def test_holdout_and_train_partition_the_training_split(make_idx_dir):
    directory = make_idx_dir("mnist", n_train=200)[0]
    full = load_dataset("mnist", root=directory)
    train = load_dataset("mnist", root=directory, holdout=30)
    held = load_dataset("mnist", "holdout", root=directory, holdout=30, seed=123)
    assert len(train) == 170 and len(held) == 30 and held.split == "holdout"
    train_ids, held_ids = set(image_ids(train.images)), set(image_ids(held.images))
    assert not train_ids & held_ids
    assert train_ids | held_ids == set(image_ids(full.images)) == set(range(200))
    assert torch.bincount(held.labels).tolist() == [3] * 10  # class-balanced
    # the same in every call, whatever the seed
    again = load_dataset("mnist", "holdout", root=directory, holdout=30, seed=7)
    assert image_ids(again.images) == image_ids(held.images)
    # subset of train never reaches into the holdout
    small = load_dataset("mnist", root=directory, holdout=30, subset=50, seed=3)
    assert set(image_ids(small.images)) <= train_ids and len(small) == 50


def test_subset_is_deterministic_nested_and_stratified(make_idx_dir):
    directory = make_idx_dir("mnist", n_train=300)[0]
    a = load_dataset("mnist", root=directory, subset=40, seed=1)
    b = load_dataset("mnist", root=directory, subset=40, seed=1)
    c = load_dataset("mnist", root=directory, subset=40, seed=2)
    d = load_dataset("mnist", root=directory, subset=20, seed=1)
    assert image_ids(a.images) == image_ids(b.images)
    assert image_ids(a.images) != image_ids(c.images)
    assert set(image_ids(d.images)) <= set(image_ids(a.images))
    assert torch.bincount(a.labels).tolist() == [4] * 10 and torch.bincount(d.labels).tolist() == [2] * 10
    ids = image_ids(a.images)
    assert ids == sorted(ids)  # original order kept


def test_subset_fills_from_other_classes_when_one_runs_out():
    labels = torch.tensor([0] * 2 + [1] * 20 + [2] * 20)
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    data = ImageSet(images, labels, 3, (0.5,), (0.5,), "toy")
    counts = torch.bincount(data.subset(20, seed=0).labels).tolist()
    assert counts[0] == 2 and sorted(counts[1:]) == [9, 9]


def test_register_dataset_adds_a_loader(monkeypatch):
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))

    @register_dataset("unit-toy")
    def toy(root=None):
        images = torch.arange(6 * 4, dtype=torch.uint8).view(6, 1, 2, 2)
        make = lambda split: ImageSet(images, torch.arange(6) % 2, 2, (0.1,), (0.2,), "unit-toy", split=split)
        return make("train"), make("test")

    assert "unit-toy" in registry.list_datasets()
    assert len(load_dataset("unit-toy", "test")) == 6
    assert len(load_dataset("unit-toy", "holdout", holdout=2)) == 2
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("unit-toy")(toy)


def test_import_reads_no_data():
    code = (
        "import sys, torchslim.data as d\n"
        "from torchslim.data import catalog, registry\n"
        "assert registry._cached_sets.cache_info().currsize == 0\n"
        "assert catalog._idx_tensors.cache_info().currsize == 0\n"
        "assert 'PIL' not in sys.modules and 'sklearn' not in sys.modules\n"
        "print(len(d.list_datasets()))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 9


# --- the real Fashion-MNIST ----------------------------------------------------------------


def test_fashion_mnist_real(fashion_dir):
    train = load_dataset("fashion-mnist")
    test = load_dataset("fashion-mnist", "test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.num_classes == 10 and train.input_shape == (1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.mean == (0.2860,) and train.std == (0.3530,) and train.flip


def test_fashion_mnist_32_real(fashion_dir):
    small = load_dataset("fashion-mnist", "test")
    big = load_dataset("fashion-mnist-32", "test")
    assert big.input_shape == (3, 32, 32) and len(big) == 10000
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert int(big.images[:, :, border].max()) == 0
    for channel in range(3):
        assert torch.equal(big.images[:, channel, 2:30, 2:30], small.images[:, 0])
    assert torch.equal(big.labels, small.labels)
    # statistics of the padded training images: the zero border scales the mean by 784/1024
    assert abs(big.mean[0] - 0.2860 * 784 / 1024) < 1e-3
    assert big.mean == load_dataset("fashion-mnist-32").mean


def test_fashion_mnist_holdout_and_subset_real(fashion_dir):
    train = load_dataset("fashion-mnist", holdout=5000)
    held = load_dataset("fashion-mnist", "holdout", holdout=5000)
    assert len(train) == 55000 and len(held) == 5000
    assert torch.bincount(held.labels).tolist() == [500] * 10
    sub = load_dataset("fashion-mnist", "test", subset=1000, seed=5)
    assert torch.bincount(sub.labels).tolist() == [100] * 10
    assert np.array_equal(sub.images.numpy(), load_dataset("fashion-mnist", "test", subset=1000, seed=5).images.numpy())
