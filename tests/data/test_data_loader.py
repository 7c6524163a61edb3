import pytest
import torch

from torchslim.data import BatchLoader, ImageSet, load_dataset
from torchslim.errors import UserError


def toy_set(n=103, flip=True, size=16, channels=3):
    """Images whose pixel [0, 0, 0] and [0, 0, 1] spell the sample index; labels = index % 10."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), generator=generator, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    return ImageSet(images, torch.arange(n) % 10, 10, (0.5,) * channels, (0.25,) * channels, "toy", flip=flip)


def collect(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_plain_iteration_is_exact_and_normalised():
    data = toy_set()
    loader = BatchLoader(data, batch_size=10)
    assert len(loader) == 11
    sizes = [len(y) for _, y in loader]
    assert sizes == [10] * 10 + [3]
    x, y = collect(loader)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (103, 3, 16, 16)
    torch.testing.assert_close(x, (data.images.float() / 255 - 0.5) / 0.25)
    assert torch.equal(y, data.labels)


def test_each_sample_once_per_epoch_and_new_order_each_epoch():
    data = toy_set()
    loader = BatchLoader(data, batch_size=16, shuffle=True, seed=3)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        order = loader.indices().tolist()
        assert sorted(order) == list(range(103))
        x, y = collect(loader)
        assert torch.equal(y, data.labels[order])
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    loader.set_epoch(1)
    assert loader.indices().tolist() == orders[1]  # deterministic for (seed, epoch)
    assert BatchLoader(data, 16, shuffle=True, seed=4).indices().tolist() != orders[0]


def test_drop_last():
    loader = BatchLoader(toy_set(), batch_size=10, shuffle=True, drop_last=True)
    assert len(loader) == 10
    assert [len(y) for _, y in loader] == [10] * 10


@pytest.mark.parametrize("n, world", [(100, 4), (103, 4), (7, 3), (5, 8)])
def test_distributed_shards(n, world):
    data = toy_set(n)
    loaders = [BatchLoader(data, 8, shuffle=True, seed=1, rank=r, world_size=world) for r in range(world)]
    for loader in loaders:
        loader.set_epoch(2)
    shards = [loader.indices().tolist() for loader in loaders]
    per_rank = -(-n // world)
    assert all(len(shard) == per_rank for shard in shards)
    assert len({len(loader) for loader in loaders}) == 1
    everything = [i for shard in shards for i in shard]
    assert set(everything) == set(range(n))
    if n % world == 0:
        assert len(everything) == len(set(everything))  # disjoint
    # padding only repeats the start of the permutation, as DistributedSampler does
    single = BatchLoader(data, 8, shuffle=True, seed=1)
    single.set_epoch(2)
    perm = single.indices().tolist()
    padded = (perm * (world * per_rank // n + 1))[: world * per_rank]
    assert shards == [padded[r::world] for r in range(world)]


def test_augmentation_is_deterministic_and_changes_with_epoch():
    data = toy_set(40)
    loader = BatchLoader(data, batch_size=16, shuffle=True, augment=True, seed=5)
    first, labels = collect(loader)
    again, _ = collect(loader)
    assert torch.equal(first, again)
    other = BatchLoader(data, batch_size=16, shuffle=True, augment=True, seed=5)
    assert torch.equal(collect(other)[0], first)
    loader.set_epoch(1)
    x1, y1 = collect(loader)
    assert not torch.equal(y1, labels)
    plain = BatchLoader(data, batch_size=16, shuffle=True, seed=5)
    clean, _ = collect(plain)
    assert not torch.equal(first, clean)  # something moved
    assert first.shape == clean.shape


def test_augmentation_is_crop_and_flip_of_the_original():
    data = toy_set(64, size=16)  # padding 16 // 8 = 2
    loader = BatchLoader(data, batch_size=64, augment=True, seed=9)
    x, _ = collect(loader)
    original = data.images.float()
    augmented = x * 0.25 + 0.5  # undo the normalisation
    augmented = (augmented * 255).round()
    padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
    flips = 0
    for i in range(64):
        candidates = [padded[i, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(augmented[i], c) for c in candidates)
        mirrored = any(torch.equal(augmented[i], c.flip(2)) for c in candidates)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54  # about half are mirrored


def test_no_flip_when_the_set_says_so():
    data = toy_set(64, flip=False, size=8)  # padding 1
    x, _ = collect(BatchLoader(data, batch_size=64, augment=True, seed=2))
    augmented = ((x * 0.25 + 0.5) * 255).round()
    padded = torch.nn.functional.pad(data.images.float(), (1, 1, 1, 1))
    for i in range(64):
        assert any(
            torch.equal(augmented[i], padded[i, :, dy : dy + 8, dx : dx + 8]) for dy in range(3) for dx in range(3)
        )


def test_bad_batch_size_is_a_user_error():
    with pytest.raises(UserError, match="batch size"):
        BatchLoader(toy_set(), 0)
    with pytest.raises(ValueError):
        BatchLoader(toy_set(), 4, rank=2, world_size=2)


def test_normalised_real_data_has_zero_mean_unit_std(fashion_dir):
    for name in ("fashion-mnist", "fashion-mnist-32"):
        data = load_dataset(name, "test")
        total = count = square = 0.0
        for x, _ in BatchLoader(data, batch_size=2500):
            total += x.double().sum().item()
            square += x.double().pow(2).sum().item()
            count += x.numel()
        mean = total / count
        std = (square / count - mean**2) ** 0.5
        assert abs(mean) < 0.02 and abs(std - 1) < 0.02, (name, mean, std)
