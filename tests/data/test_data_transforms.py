import pytest
import torch
import torch.nn.functional as F

from torchslim.data.transforms import (
    normalize,
    normalize_uint8,
    pad_to,
    random_crop,
    random_crop_flip,
    random_flip,
    resize_to,
    to_channels,
)


def images(n=6, c=3, h=8, w=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=generator, dtype=torch.uint8)


def test_pad_to_centres_with_zeros():
    x = images(2, 1, 28, 28) | 1  # no zero pixels inside
    padded = pad_to(x, 32)
    assert padded.shape == (2, 1, 32, 32) and padded.dtype == torch.uint8
    assert torch.equal(padded[:, :, 2:30, 2:30], x)
    assert int(padded.sum()) == int(x.sum())
    odd = pad_to(images(1, 1, 3, 3), (6, 4))
    assert odd.shape == (1, 1, 6, 4) and int(odd[0, 0, 0].sum()) == 0 and int(odd[0, 0, -2:].sum()) == 0
    with pytest.raises(ValueError):
        pad_to(x, 20)


def test_resize_to():
    constant = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    big = resize_to(constant, 32)
    assert big.shape == (2, 3, 32, 32) and big.dtype == torch.uint8 and bool((big == 77).all())
    x = images()
    assert resize_to(x, 8) is x
    expected = F.interpolate(x.float(), size=(16, 16), mode="bilinear", align_corners=False).round()
    assert torch.equal(resize_to(x, 16).float(), expected)
    assert resize_to(x.float(), (4, 6)).shape == (6, 3, 4, 6)


def test_to_channels():
    grey = images(c=1)
    rgb = to_channels(grey, 3)
    assert rgb.shape == (6, 3, 8, 8) and all(torch.equal(rgb[:, i], grey[:, 0]) for i in range(3))
    assert to_channels(rgb, 3) is rgb
    with pytest.raises(ValueError):
        to_channels(rgb, 1)


def test_normalize_and_normalize_uint8_agree():
    x = images()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    reference = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x.float() / 255, mean, std), reference)
    torch.testing.assert_close(normalize_uint8(x, mean, std), reference)
    assert normalize_uint8(x, mean, std).dtype == torch.float32


@pytest.mark.parametrize("padding", [1, 4])
def test_random_crop_matches_a_per_sample_loop(padding):
    x = images(32, 3, 10, 12)
    offsets = torch.randint(0, 2 * padding + 1, (2, 32), generator=torch.Generator().manual_seed(7))
    got = random_crop(x, padding, torch.Generator().manual_seed(7))
    padded = F.pad(x, (padding,) * 4)
    expected = torch.stack(
        [padded[i, :, dy : dy + 10, dx : dx + 12] for i, (dy, dx) in enumerate(offsets.t().tolist())]
    )
    assert torch.equal(got, expected)
    assert not torch.equal(got, x)
    assert random_crop(x, 0) is x


def test_random_flip_matches_a_per_sample_loop():
    x = images(40)
    mask = torch.rand(40, generator=torch.Generator().manual_seed(3)) < 0.5
    got = random_flip(x, torch.Generator().manual_seed(3))
    expected = torch.stack([x[i].flip(2) if mask[i] else x[i] for i in range(40)])
    assert torch.equal(got, expected)
    assert 0 < int(mask.sum()) < 40


@pytest.mark.parametrize("padding", [0, 2])
def test_random_crop_flip_equals_crop_then_flip(padding):
    x = images(50, 3, 12, 12)
    generator = torch.Generator().manual_seed(11)
    expected = random_flip(random_crop(x, padding, generator), generator)
    assert torch.equal(random_crop_flip(x, padding, True, torch.Generator().manual_seed(11)), expected)
    crop_only = random_crop(x, padding, torch.Generator().manual_seed(11))
    assert torch.equal(random_crop_flip(x, padding, False, torch.Generator().manual_seed(11)), crop_only)
