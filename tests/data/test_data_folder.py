import os

import pytest
import torch

from torchslim.data import load_dataset
from torchslim.errors import UserError

# make_folder writes solid colours: ant green, bee blue, cat red
COLOUR_OF_CLASS = {0: (0, 255, 0), 1: (0, 0, 255), 2: (255, 0, 0)}


def assert_solid_colours(imageset, tolerance):
    for image, label in zip(imageset.images, imageset.labels.tolist()):
        expected = torch.tensor(COLOUR_OF_CLASS[label], dtype=torch.float32).view(3, 1, 1)
        assert (image.float() - expected).abs().max() <= tolerance


def test_folder_without_splits_makes_a_stratified_80_20_split(make_folder):
    root = make_folder()
    train = load_dataset("folder", "train", root=root)
    test = load_dataset("folder", "test", root=root)
    assert train.classes == ["ant", "bee", "cat"] and train.num_classes == 3
    assert train.input_shape == (3, 32, 32) and test.input_shape == (3, 32, 32)
    assert len(train) == 12 and len(test) == 3
    assert torch.bincount(train.labels).tolist() == [4, 4, 4]
    assert torch.bincount(test.labels).tolist() == [1, 1, 1]
    assert_solid_colours(train, tolerance=3)  # jpeg is lossy; png and bmp are exact
    assert_solid_colours(test, tolerance=3)
    assert train.flip and train.mean == test.mean
    # mean of the train split: a third of the images are pure red, green, blue
    assert all(abs(m - 1 / 3) < 0.01 for m in train.mean)


def test_folder_with_train_and_test_dirs(make_folder):
    root = make_folder(counts={"cat": 2, "bee": 3}, splits=("train", "test"))
    train = load_dataset("folder", root=root)
    test = load_dataset("folder", "test", root=root)
    assert train.classes == ["bee", "cat"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and test.labels.tolist() == [0, 0, 0, 1, 1]


def test_folder_val_dir_image_size_and_grayscale(make_folder):
    root = make_folder(counts={"ant": 2, "cat": 1}, splits=("train", "val"), size=(40, 20))
    test = load_dataset("folder", "test", root=root, image_size=24, grayscale=True)
    assert test.input_shape == (1, 24, 24) and len(test.mean) == 1
    assert test.labels.tolist() == [0, 0, 1]
    # Pillow's L conversion of pure green is 150, of pure red 76
    assert abs(int(test.images[0].float().mean()) - 150) <= 2
    assert abs(int(test.images[2].float().mean()) - 76) <= 2


def test_corrupt_image_names_the_file(make_folder):
    root = make_folder()
    bad = os.path.join(root, "bee", "broken.png")
    with open(bad, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(UserError) as error:
        load_dataset("folder", root=root)
    assert "\n" not in str(error.value) and bad in str(error.value)


def test_folder_errors(tmp_path, make_folder):
    with pytest.raises(UserError, match="--data folder:DIR"):
        load_dataset("folder")
    missing = str(tmp_path / "nowhere")
    with pytest.raises(UserError) as error:
        load_dataset("folder", root=missing)
    assert missing in str(error.value)
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as error:
        load_dataset("folder", root=str(empty))
    assert "no images found in" in str(error.value) and str(empty) in str(error.value)
    root = make_folder(counts={"cat": 2}, splits=("train",), name="a")
    make_folder(counts={"ant": 1}, splits=("test",), name="a")
    with pytest.raises(UserError, match="has no counterpart in the training split"):
        load_dataset("folder", "test", root=root)
    with pytest.raises(UserError, match="no option 'colour'"):
        load_dataset("folder", root=root, colour=True)
