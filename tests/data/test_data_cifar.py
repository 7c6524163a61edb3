import os
import pickle

import numpy as np
import pytest
import torch

from torchslim.data import load_dataset
from torchslim.data.cifar import CIFAR10, find_cifar_dir, safe_unpickle
from torchslim.errors import UserError

from .data_testfiles import cifar_batch, dump


def expected_split(batches, names, label_key=b"labels"):
    data = np.concatenate([batches[n][b"data"] for n in names])
    labels = sum((batches[n][label_key] for n in names), [])
    return data, labels


def test_cifar10_pixel_order_labels_and_names(make_cifar10):
    parent, batches, names = make_cifar10()
    train = load_dataset("cifar10", "train", root=parent)
    test = load_dataset("cifar10", "test", root=parent)
    data, labels = expected_split(batches, [f"data_batch_{i}" for i in range(1, 6)])
    assert len(train) == 15 and len(test) == 4
    assert train.input_shape == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == labels
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    assert train.classes == names and train.num_classes == 10
    # channel-major rows: 1024 red values, then 1024 green, then 1024 blue, each row-major 32x32
    row = data[7]
    image = train.images[7].numpy()
    assert image[0, 0, 0] == row[0] and image[0, 0, 31] == row[31] and image[0, 1, 0] == row[32]
    assert image[1, 0, 0] == row[1024] and image[2, 0, 0] == row[2048] and image[2, 31, 31] == row[3071]
    np.testing.assert_array_equal(train.images.numpy().reshape(15, 3072), data)
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    assert train.flip and test.mean == train.mean


def test_cifar10_accepts_the_batch_folder_itself(make_cifar10):
    parent, batches, _ = make_cifar10()
    folder = os.path.join(parent, "cifar-10-batches-py")
    assert find_cifar_dir(folder, CIFAR10) == folder
    assert find_cifar_dir(parent, CIFAR10) == folder
    test = load_dataset(f"cifar10:{folder}", "test")
    np.testing.assert_array_equal(test.images.numpy().reshape(4, 3072), batches["test_batch"][b"data"])


def test_cifar100_fine_labels_and_names(make_cifar100):
    folder, batches, names = make_cifar100()
    train = load_dataset("cifar100", root=folder)
    test = load_dataset("cifar100", "test", root=folder)
    assert train.num_classes == 100 and train.classes == names
    assert train.labels.tolist() == batches["train"][b"fine_labels"]
    assert test.labels.tolist() == batches["test"][b"fine_labels"]
    np.testing.assert_array_equal(train.images.numpy().reshape(12, 3072), batches["train"][b"data"])
    assert train.mean == (0.5071, 0.4865, 0.4409)


def test_numpy1_module_names_are_accepted(tmp_path):
    """Pickles written by numpy 1.x (and Python 2) name numpy.core.multiarray."""
    batch = cifar_batch(2, b"labels", 10, seed=3)
    raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    loaded = safe_unpickle(str(path))
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_unpickle_round_trips_numpy(tmp_path, protocol):
    batch = cifar_batch(3, b"labels", 10, seed=4)
    dump(tmp_path / "b", batch, protocol=protocol)
    loaded = safe_unpickle(str(tmp_path / "b"))
    assert loaded[b"labels"] == batch[b"labels"]
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_code(make_cifar10, tmp_path):
    parent, _, _ = make_cifar10()
    marker = tmp_path / "pwned"
    path = os.path.join(parent, "cifar-10-batches-py", "data_batch_3")
    dump(path, {b"data": Exploit(marker), b"labels": [0]})
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", root=parent)
    assert not marker.exists()
    message = str(error.value)
    assert "\n" not in message and path in message and "refusing" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-dict", "missing-key", "bad-shape", "bad-label"])
def test_corrupt_batches_raise_user_error_naming_file(make_cifar10, damage):
    parent, batches, _ = make_cifar10()
    path = os.path.join(parent, "cifar-10-batches-py", "test_batch")
    batch = dict(batches["test_batch"])
    if damage == "truncated":
        raw = pickle.dumps(batch, protocol=2)
        open(path, "wb").write(raw[: len(raw) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"\x80\x02this is not a pickle")
    elif damage == "not-a-dict":
        dump(path, [1, 2, 3])
    elif damage == "missing-key":
        del batch[b"labels"]
        dump(path, batch)
    elif damage == "bad-shape":
        batch[b"data"] = batch[b"data"][:, :100]
        dump(path, batch)
    else:
        batch[b"labels"] = [10] * len(batch[b"labels"])
        dump(path, batch)
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", "test", root=parent)
    assert "\n" not in str(error.value) and path in str(error.value)


def test_missing_cifar_folder_and_missing_root(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHSLIM_DATA", raising=False)
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "--data cifar10:DIR" in message
    with pytest.raises(UserError) as error:
        load_dataset("cifar100")
    assert "--data cifar100:DIR" in str(error.value)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match="tar xzf"):
        load_dataset("cifar10", root=str(tmp_path))


def test_env_var_base_is_searched(make_cifar10, monkeypatch):
    parent, batches, _ = make_cifar10()
    monkeypatch.setenv("TORCHSLIM_DATA", parent)
    test = load_dataset("cifar10", "test")
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
