import copy

import torch

from torchslim import models
from torchslim.data import BatchLoader, ImageSet, load_dataset
from torchslim.distill import FrozenTeacher, LogitCache
from torchslim.distill.cache import image_digests, teacher_fingerprint


def _teacher(seed=0):
    torch.manual_seed(seed)
    model = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8), width_mult=0.5)
    # non-trivial BN statistics, so eval mode matters
    model.train()
    with torch.no_grad():
        model(torch.randn(64, 1, 8, 8) * 2 + 1)
    return model.eval()


def _random_images(n=640):
    # distinct random images: no image appears in two different batches unless the loader repeats it
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageSet(images, labels, 10, (0.5,), (0.25,), name="random", flip=True)


def _batches(augment=True, seed=3, epochs=2):
    loader = BatchLoader(_random_images(), batch_size=64, shuffle=True, augment=augment, seed=seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        yield from (x for x, _ in loader)


def _replay(tmp_path, teacher, epochs):
    live = FrozenTeacher(copy.deepcopy(teacher))
    first = FrozenTeacher(copy.deepcopy(teacher), cache=LogitCache(tmp_path, teacher, "random", seed=3))
    for x in _batches(epochs=epochs):
        assert torch.equal(first.logits(x), live.logits(x))  # a miss returns the live forward itself
    first.flush()
    assert first.cache.misses > 0
    # reopened from disk: every batch comes from the cache, no teacher forward runs
    second = FrozenTeacher(copy.deepcopy(teacher), cache=LogitCache(tmp_path, teacher, "random", seed=3))
    assert len(second.cache) == len(first.cache)
    calls = []
    second._live = lambda x: calls.append(1) or live.logits(x)
    pairs = [(second.logits(x), live.logits(x)) for x in _batches(epochs=epochs)]
    assert not calls and second.cache.misses == 0 and second.cache.stats()["hit_rate"] == 1.0
    return pairs


def test_cached_logits_equal_live_ones_exactly(tmp_path):
    # one epoch: each image is cached from the very batch it is replayed in, so the values are bit-identical
    for cached, live in _replay(tmp_path, _teacher(), epochs=1):
        assert torch.equal(cached, live)


def test_cached_logits_across_epochs_match_to_rounding(tmp_path):
    # a crop repeated in a later epoch is served from the batch it first came in: equal up to float rounding
    pairs = _replay(tmp_path, _teacher(), epochs=3)
    for cached, live in pairs:
        assert torch.allclose(cached, live, rtol=1e-5, atol=1e-6)


def test_other_augmentation_seed_or_teacher_misses(tmp_path):
    teacher = _teacher()
    cache = LogitCache(tmp_path, teacher, "digits", seed=3)
    for x in _batches(seed=3, epochs=1):
        cache.lookup(x, lambda batch: teacher(batch))
    cache.flush()
    # same teacher, different augmentation draws: new images, no hits (the cache only grows)
    other_seed = LogitCache(tmp_path, teacher, "digits", seed=4)
    assert len(other_seed) == 0 and other_seed.folder != cache.folder
    # a teacher with one BN statistic changed gets its own key
    changed = copy.deepcopy(teacher)
    changed.classifier[1].running_mean[0] += 1e-3
    assert teacher_fingerprint(changed) != teacher_fingerprint(teacher)
    assert LogitCache(tmp_path, changed, "digits", seed=3).folder != cache.folder


def test_digests_follow_exact_pixels():
    x = torch.randn(4, 1, 8, 8)
    y = x.clone()
    y[2, 0, 3, 3] = torch.nextafter(y[2, 0, 3, 3], torch.tensor(10.0))
    a, b = image_digests(x), image_digests(y)
    assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and a[2] != b[2]
    assert len(set(a)) == 4


def test_partial_flushes_survive_an_interruption(tmp_path):
    teacher = _teacher()
    cache = LogitCache(tmp_path, teacher, "digits", seed=3, flush_every=100)
    batches = list(_batches(epochs=1))
    for x in batches:
        cache.lookup(x, lambda batch: teacher(batch))
    # no final flush: entries written in 100-row shards are still on disk
    reopened = LogitCache(tmp_path, teacher, "digits", seed=3)
    assert 0 < len(reopened) <= len(cache) and len(cache) - len(reopened) < 100


def test_cache_in_distill_replays_the_same_training(tmp_path):
    from torchslim.distill import DistillConfig, distill
    from torchslim.train import TrainConfig

    train = load_dataset("digits", "train").subset(384)
    teacher = _teacher()
    config = TrainConfig(epochs=2, batch_size=64, augment=False, seed=1)
    students = []
    for cache_dir in (None, tmp_path, tmp_path):
        torch.manual_seed(5)
        student = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8), width_mult=0.25)
        result = distill(student, DistillConfig(cache_dir=cache_dir), train, teacher=teacher, train_config=config,
                         progress=False)
        students.append((result.model.state_dict(), result.history.get("cache")))
    (live, no_cache), (first, first_stats), (second, second_stats) = students
    assert no_cache is None
    # without augmentation epoch 2 repeats epoch 1's images: the first cached run already hits there
    assert first_stats["hits"] == first_stats["misses"] == 384 - 384 % 64
    assert second_stats["hit_rate"] == 1.0
    for key in live:
        assert torch.equal(first[key], second[key])  # a replay from the cache is exact
        assert torch.allclose(live[key].float(), first[key].float(), rtol=1e-3, atol=1e-5)
