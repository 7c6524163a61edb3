"""Image folders read per batch: formats, exact preprocessing geometry, determinism, sharding."""

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from torchslim.data import BatchLoader, ImageSet, load_dataset
from torchslim.data.decode import eval_image, train_image
from torchslim.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop_box,
    default_resize_size,
    random_resized_crop_box,
    shorter_side_size,
    with_normalization,
)
from torchslim.data.stream import ImageFiles

from .data_testfiles import colour_id, write_id_folder

BILINEAR = Image.Resampling.BILINEAR
RED, BLUE = (250, 10, 10), (10, 10, 250)


def uint8_pixels(x, data):
    """Undo the normalisation of a float batch: back to 0..255 values."""
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x * std + mean) * 255


def write_mixed_folder(root):
    """train/ and test/ with one image per format and mode; returns {path: expected RGB}."""
    expected = {}
    for split in ("train", "test"):
        for name, colour in (("blue", BLUE), ("red", RED)):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            images = {
                "a.jpg": Image.new("RGB", (90, 70), colour),
                "b.png": Image.new("RGB", (70, 90), colour),
                "c.webp": Image.new("RGB", (100, 64), colour),
                "d_grey.png": Image.new("L", (80, 80), 200 if name == "red" else 40),
                "e_rgba.png": Image.new("RGBA", (66, 99), (*colour, 90)),
                "f_palette.png": Image.new("RGB", (64, 64), colour).convert("P", palette=Image.Palette.ADAPTIVE),
            }
            for file, image in images.items():
                path = os.path.join(folder, file)
                image.save(path)
                grey = 200 if name == "red" else 40
                expected[path] = (grey,) * 3 if "grey" in file else colour
    return expected


def test_jpeg_png_webp_grey_rgba_and_palette_are_read_as_rgb(tmp_path):
    expected = write_mixed_folder(str(tmp_path))
    train = load_dataset("folder", "train", root=str(tmp_path), image_size=64)
    test = load_dataset("folder", "test", root=str(tmp_path), image_size=64)
    assert isinstance(train, ImageFiles) and train.input_shape == (3, 64, 64)
    assert train.classes == ["blue", "red"] and len(train) == len(test) == 12
    assert train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD
    for data in (train, test):
        x, y = next(iter(BatchLoader(data, batch_size=len(data), workers=2)))
        assert x.shape == (12, 3, 64, 64) and y.tolist() == [0] * 6 + [1] * 6
        pixels = uint8_pixels(x, data)
        for path, image in zip(data.paths, pixels):
            colour = torch.tensor(expected[path], dtype=torch.float32).view(3, 1, 1)
            lossy = path.endswith((".jpg", ".webp"))
            assert (image - colour).abs().max() <= (6 if lossy else 0.01), path


def test_grey_folder_and_sixteen_bit_png(tmp_path):
    for k, value in enumerate((1000, 60000)):
        os.makedirs(tmp_path / "train" / f"c{k}")
        os.makedirs(tmp_path / "test" / f"c{k}")
        for split in ("train", "test"):
            array = np.full((70, 70), value, dtype=np.uint16)
            Image.fromarray(array).save(tmp_path / split / f"c{k}" / "deep.png")
    test = load_dataset("folder", "test", root=str(tmp_path), image_size=64, grayscale=True)
    assert test.input_shape == (1, 64, 64) and len(test.mean) == 1
    x, _ = next(iter(BatchLoader(test, batch_size=2, workers=0)))
    pixels = uint8_pixels(x, test)
    assert torch.allclose(pixels[0], torch.tensor(1000 // 256.0), atol=0.01)
    assert torch.allclose(pixels[1], torch.tensor(60000 // 256.0), atol=0.01)


def test_eval_geometry_numbers():
    assert default_resize_size(224) == 256 and default_resize_size(64) == 73 and default_resize_size(299) == 341
    assert shorter_side_size(400, 300, 256) == (341, 256)
    assert shorter_side_size(300, 400, 256) == (256, 341)
    assert shorter_side_size(256, 256, 256) == (256, 256)
    assert center_crop_box(341, 256, 224) == (58, 16, 282, 240)  # 58.5 rounds to even
    assert center_crop_box(256, 341, 224) == (16, 58, 240, 282)
    assert center_crop_box(146, 73, 64) == (41, 4, 105, 68)


def quadrants(width=400, height=200):
    """Red where x < width/2, green where y < height/2 (exact edges to find after the crop)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2, 0] = 255
    array[: height // 2, :, 1] = 255
    return Image.fromarray(array)


def test_eval_resizes_the_shorter_side_then_crops_the_centre():
    source = quadrants()
    out = eval_image(source, "RGB", 64, 73)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    manual = np.asarray(source.resize((146, 73), BILINEAR).crop((41, 4, 105, 68)))
    assert np.array_equal(out, manual)
    # the red edge sits at x = 73 of the 146-wide image, 32 in the crop; the green one at 36.5 - 4 = 32.5
    assert (out[:, :29, 0] == 255).all() and (out[:, 36:, 0] == 0).all()
    assert (out[:29, :, 1] == 255).all() and (out[37:, :, 1] == 0).all()


def test_train_crop_is_the_drawn_box_resized_and_mirrored():
    source = quadrants(300, 240)
    mirrored = 0
    for seed in range(12):
        draws = random.Random(seed)
        box = random_resized_crop_box(300, 240, draws)
        mirror = draws.random() < 0.5
        expected = source.resize((48, 48), BILINEAR, box=box)
        if mirror:
            expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = train_image(source, "RGB", 48, random.Random(seed), flip=True)
        assert np.array_equal(out, np.asarray(expected))
        mirrored += mirror
    assert 0 < mirrored < 12
    unflipped = train_image(source, "RGB", 48, random.Random(1), flip=False)
    draws = random.Random(1)
    assert np.array_equal(unflipped, np.asarray(source.resize((48, 48), BILINEAR,
                                                              box=random_resized_crop_box(300, 240, draws))))


@pytest.mark.parametrize("width,height", [(300, 240), (64, 64), (2000, 20), (20, 900)])
def test_random_resized_crop_boxes_stay_inside_with_the_allowed_area_and_aspect(width, height):
    areas = []
    for seed in range(300):
        left, top, right, bottom = random_resized_crop_box(width, height, random.Random(seed))
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        w, h = right - left, bottom - top
        areas.append(w * h / (width * height))
        if 3 / 4 <= width / height <= 4 / 3:
            assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
            assert 0.08 - 0.02 <= areas[-1] <= 1.0
    if width == 2000:  # no 3/4..4/3 box fits ten tries: the centred widest allowed box
        assert random_resized_crop_box(width, height, random.Random(0)) == (986, 0, 1013, 20)
    if width == 300:
        assert min(areas) < 0.2 and max(areas) > 0.8  # the whole range is used


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode(tmp_path):
    y, x = np.mgrid[0:900, 0:1200]
    array = np.stack([x * 255 // 1199, y * 255 // 899, (x + y) * 255 // 2098], axis=2).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "big.jpg", quality=95)
    with Image.open(tmp_path / "big.jpg") as image:
        drafted = eval_image(image, "RGB", 64, 73)
        assert image.size[0] < 1200  # JPEG draft mode decoded fewer pixels
    full = eval_image(Image.fromarray(array), "RGB", 64, 73)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 2.0


def noise_folder(root, classes=2, per_class=7, size=(80, 60)):
    rng = np.random.default_rng(0)
    for k in range(classes):
        os.makedirs(os.path.join(root, f"c{k}"))
        for i in range(per_class):
            array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(array).save(os.path.join(root, f"c{k}", f"{i}.png"))
    return root


def epoch_batches(data, seed, epoch, workers):
    loader = BatchLoader(data, batch_size=4, shuffle=True, augment=True, seed=seed, drop_last=True, workers=workers)
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_same_seed_and_epoch_give_the_same_crops_in_any_worker(tmp_path):
    root = noise_folder(str(tmp_path / "noise"))
    train = load_dataset("folder", "train", root=root, image_size=32, stream=True)
    assert len(train) == 12
    first = epoch_batches(train, 3, 0, workers=0)
    assert len(first) == 3
    for again in (epoch_batches(train, 3, 0, workers=2), epoch_batches(train, 3, 0, workers=0)):
        for (x0, y0), (x1, y1) in zip(first, again):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
    for other in (epoch_batches(train, 3, 1, workers=2), epoch_batches(train, 4, 0, workers=2)):
        assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_follow_distributed_sampler_as_the_in_memory_loader_does(tmp_path, world_size):
    paths = write_id_folder(tmp_path / "ids", classes=1, per_class=11)
    files = ImageFiles(paths, torch.zeros(11, dtype=torch.int64), 1, (0.5,) * 3, (0.5,) * 3, "ids", image_size=8)
    held = ImageSet(torch.zeros(11, 3, 8, 8, dtype=torch.uint8), torch.zeros(11, dtype=torch.int64), 1,
                    (0.5,) * 3, (0.5,) * 3, "ids")
    for shuffle in (False, True):
        seen = []
        for rank in range(world_size):
            streamed = BatchLoader(files, 3, shuffle=shuffle, seed=5, rank=rank, world_size=world_size, workers=0)
            in_memory = BatchLoader(held, 3, shuffle=shuffle, seed=5, rank=rank, world_size=world_size)
            streamed.set_epoch(2)
            in_memory.set_epoch(2)
            assert torch.equal(streamed.indices(), in_memory.indices())
            x, _ = zip(*streamed)
            decoded = [colour_id(torch.round(uint8_pixels(b, files)[i, :, 0, 0]).tolist())
                       for b in x for i in range(len(b))]
            assert decoded == streamed.indices().tolist()  # the pixels read are those of the sampled files
            seen += decoded
        assert sorted(set(seen)) == list(range(11)) and len(seen) == -(-11 // world_size) * world_size


def test_take_subset_and_normalisation_override(tmp_path):
    root = noise_folder(str(tmp_path / "noise"), classes=3, per_class=5)
    train = load_dataset("folder", "train", root=root, image_size=64)
    small = train.subset(6, seed=1)
    assert isinstance(small, ImageFiles) and len(small) == 6 and torch.bincount(small.labels).tolist() == [2, 2, 2]
    assert set(small.paths) <= set(train.paths) and small.subset(6) is small
    held = load_dataset("folder", "holdout", root=root, image_size=64, holdout=3)
    rest = load_dataset("folder", "train", root=root, image_size=64, holdout=3)
    assert len(held) == 3 and len(rest) == 9 and not set(held.paths) & set(rest.paths)
    custom = with_normalization(train, (0.5,), (0.25, 0.5, 1.0))
    assert custom.mean == (0.5, 0.5, 0.5) and custom.std == (0.25, 0.5, 1.0) and train.mean == IMAGENET_MEAN
    x, _ = next(iter(BatchLoader(custom, batch_size=2)))
    raw = next(iter(BatchLoader(with_normalization(train, (0.0,), (1.0,)), batch_size=2)))[0]
    torch.testing.assert_close(x, (raw - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1))


def test_reading_a_streamed_epoch_leaves_the_global_rng_alone(tmp_path):
    root = noise_folder(str(tmp_path / "noise"))
    train = load_dataset("folder", "train", root=root, image_size=64)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert sum(len(y) for _, y in BatchLoader(train, batch_size=4, shuffle=True, augment=True, workers=2)) == 12
    assert torch.equal(torch.rand(3), expected)  # dropout and initial weights draw the same numbers
