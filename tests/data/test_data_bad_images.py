"""Unreadable images (one line, or skipped with a count), too-small classes, and the image flags of the CLI."""

import argparse
import json
import os

import pytest
import torch
from PIL import Image, UnidentifiedImageError

from tests.conftest import run_cli
from torchslim.cli.common import load_data
from torchslim.data import BatchLoader, clear_cache, load_dataset
from torchslim.data.decode import open_image
from torchslim.errors import UserError
from torchslim.models import create
from torchslim.train import evaluate

from .data_testfiles import write_id_folder


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()  # every test writes its own folder: never reuse another's files
    yield
    clear_cache()


def garbage(path):
    with open(path, "wb") as handle:
        handle.write(b"this is not an image at all")
    return str(path)


def truncated_jpeg(path, size=(120, 90)):
    """A JPEG whose header reads fine but whose pixel data stops halfway."""
    Image.effect_noise(size, 60).convert("RGB").save(path, quality=90)
    with open(path, "rb") as handle:
        payload = handle.read()
    with open(path, "wb") as handle:
        handle.write(payload[: len(payload) // 2])
    return str(path)


def id_root(tmp_path, per_class=5):
    root = tmp_path / "ids"
    write_id_folder(root / "train", classes=2, per_class=per_class, size=(70, 70))
    write_id_folder(root / "test", classes=2, per_class=per_class, size=(70, 70))
    return str(root)


@pytest.mark.parametrize("image_size", [16, 64])  # held in memory, streamed
def test_unreadable_file_is_one_line_naming_it_or_skipped_with_a_count(tmp_path, capsys, image_size):
    root = id_root(tmp_path)
    bad = garbage(os.path.join(root, "train", "c1", "zz.png"))
    with pytest.raises(UserError) as error:
        load_dataset("folder", "train", root=root, image_size=image_size)
    message = str(error.value)
    assert "\n" not in message and bad in message and "--bad-images skip" in message
    train = load_dataset("folder", "train", root=root, image_size=image_size, bad_images="skip")
    assert len(train) == 10 and torch.bincount(train.labels).tolist() == [5, 5]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "skipped 1 unreadable image" in lines[0] and bad in lines[0]
    with pytest.raises(UserError, match="choose from: error, skip"):
        load_dataset("folder", "train", root=root, image_size=image_size, bad_images="ignore")


def test_image_that_breaks_mid_decode_stops_in_one_line_or_is_left_out_of_its_batch(tmp_path, capsys):
    root = id_root(tmp_path)
    bad = truncated_jpeg(os.path.join(root, "test", "c0", "0002x.jpg"))
    model = create("shallow2", num_classes=2, in_channels=3, input_size=(64, 64))
    test = load_dataset("folder", "test", root=root, image_size=64)  # the header is fine: found when decoded
    assert len(test) == 11
    with pytest.raises(UserError) as error:
        evaluate(model, test, batch_size=4)
    assert "\n" not in str(error.value) and bad in str(error.value)
    clear_cache()
    test = load_dataset("folder", "test", root=root, image_size=64, bad_images="skip")
    for _ in range(2):  # named once, not once per pass
        assert evaluate(model, test, batch_size=4)["n"] == 10
    loader = BatchLoader(test, batch_size=4, workers=2)
    assert sum(len(y) for _, y in loader) == 10 and loader.skipped == [bad]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "skipped 1 unreadable image" in lines[0] and bad in lines[0]


def test_too_few_images_for_a_class_or_a_split(tmp_path):
    root = tmp_path / "few"
    write_id_folder(root, classes=3, per_class=4)
    os.remove(root / "c1" / "0004.png")
    os.remove(root / "c1" / "0005.png")
    with pytest.raises(UserError) as error:
        load_dataset("folder", root=str(root), image_size=64)
    assert "\n" not in str(error.value)
    assert "class 'c1'" in str(error.value) and "has 2 images" in str(error.value) and "at least 3" in str(error.value)
    split = id_root(tmp_path)
    for name in os.listdir(os.path.join(split, "train", "c1")):
        garbage(os.path.join(split, "train", "c1", name))
    with pytest.raises(UserError, match="class 'c1' of .* has no readable training images"):
        load_dataset("folder", root=split, image_size=64, bad_images="skip")


def data_args(data, **flags):
    values = dict(data=data, subset=None, holdout=0, image_size=None, mean=None, std=None, bad_images=None)
    values.update(flags)
    return argparse.Namespace(**values)


def test_cli_image_flags_and_the_models_input_shape(tmp_path):
    root = id_root(tmp_path)
    grey = load_data(data_args(f"folder:{root}"), "test", input_shape=(1, 72, 72))
    assert grey.input_shape == (1, 72, 72) and grey.mean == (0.449,) and grey.std == (0.226,)
    sized = load_data(data_args(f"folder:{root}", image_size=96, mean="0.5", std="0.2,0.3,0.4"), "test", (3, 64, 64))
    assert sized.input_shape == (3, 96, 96) and sized.mean == (0.5,) * 3 and sized.std == (0.2, 0.3, 0.4)
    small = load_data(data_args(f"folder:{root}"), "train")
    assert small.input_shape == (3, 32, 32) and hasattr(small, "images")  # the in-memory path, as before
    with pytest.raises(UserError, match="--image-size applies to --data folder:DIR only"):
        load_data(data_args("digits", image_size=64), "test")
    with pytest.raises(UserError, match="--std must be comma-separated numbers"):
        load_data(data_args(f"folder:{root}", std="0.2;0.3"), "test")


def test_cli_eval_bad_image_exit_code_and_skip_count(tmp_path):
    root = id_root(tmp_path)
    model = tmp_path / "m.safetensors"
    trained = run_cli("train", "--model", "shallow2", "--data", f"folder:{root}", "--image-size", "64",
                      "--epochs", "1", "--batch-size", "4", "--out", model, "--json")
    assert trained.returncode == 0, trained.stderr
    bad = truncated_jpeg(os.path.join(root, "test", "c1", "zz.jpg"))
    failed = run_cli("eval", model, "--data", f"folder:{root}", "--json")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [failed.stderr.strip()]
    assert failed.stderr.startswith("torchslim: error: cannot decode image " + bad)
    skipped = run_cli("eval", model, "--data", f"folder:{root}", "--bad-images", "skip", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout.strip().splitlines()[-1])["n"] == 10
    assert "skipped 1 unreadable image" in skipped.stderr and bad in skipped.stderr


@pytest.mark.parametrize("image_size", [16, 64])
def test_only_the_folder_formats_are_decoded_whatever_the_file_is_named(tmp_path, image_size):
    root = id_root(tmp_path)
    eps = os.path.join(root, "train", "c0", "drawing.jpg")
    with open(eps, "w") as handle:  # Pillow would hand EPS to Ghostscript: it must never get that far
        handle.write("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with Image.open(eps) as unrestricted:
        assert unrestricted.format == "EPS"  # what plain Image.open would go on to render
    with pytest.raises(UnidentifiedImageError):
        open_image(eps)
    with pytest.raises(UserError) as error:
        load_dataset("folder", "train", root=root, image_size=image_size)
    assert eps in str(error.value)
    os.remove(eps)
    gif = os.path.join(root, "train", "c0", "anim.png")
    Image.new("RGB", (70, 70), (1, 2, 3)).save(gif, format="GIF")
    with pytest.raises(UserError, match="cannot decode image .*anim.png"):
        load_dataset("folder", "train", root=root, image_size=image_size)


def test_a_training_split_smaller_than_one_batch_is_refused(tmp_path):
    root = id_root(tmp_path)
    train = load_dataset("folder", "train", root=root, image_size=64)
    with pytest.raises(UserError, match=r"has 10 images \(5 per process\), fewer than one batch of 8"):
        BatchLoader(train, batch_size=8, shuffle=True, rank=1, world_size=2, drop_last=True)
    assert len(BatchLoader(train, batch_size=8)) == 2  # evaluation keeps the partial batch
