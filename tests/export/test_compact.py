import json

import pytest
import torch

import torchslim
from torchslim import models
from torchslim.codebook import WeightShareConfig, weight_share
from torchslim.errors import UserError
from torchslim.export import PackOptions, pack_model, save_packed
from torchslim.export.compact import BlobReader, BlobWriter, expand_modules, modules_delta, narrowest
from torchslim.io.spec import describe_modules
from torchslim.lowrank import LowRankConfig, factorize
from torchslim.sparse import SparsityConfig, sparsify


@pytest.mark.parametrize("values, dtype", [
    ([0.5, -0.0, 1024.0, float("inf")], torch.float16),  # float16-exact, sign of zero kept
    ([2.0 ** 40, -3 * 2.0 ** -100], torch.bfloat16),  # out of float16's range, bfloat16-exact
    ([0.1, 1.0], torch.float32),  # 0.1 needs all 24 bits
    ([float("nan")], torch.float32),  # NaN is never narrowed (no bit-exact promise)
])
def test_floats_are_narrowed_only_when_exact(values, dtype):
    tensor = torch.tensor(values, dtype=torch.float32)
    narrow = narrowest(tensor)
    assert narrow.dtype == dtype
    if dtype != torch.float32:
        assert torch.equal(narrow.float().view(torch.int32), tensor.view(torch.int32))


@pytest.mark.parametrize("values, dtype", [([0, 255], torch.uint8), ([-128, 127], torch.int8),
                                           ([-1, 300], torch.int16), ([0, 1 << 40], torch.int64)])
def test_integers_take_the_narrowest_type_that_holds_them(values, dtype):
    assert narrowest(torch.tensor(values, dtype=torch.int64)).dtype == dtype


def test_blobs_give_every_field_back_exactly():
    fields = {"a": torch.tensor([0.5, 2.0]), "b": torch.tensor([[0.1, 0.2]]), "c": torch.arange(5),
              "d": torch.tensor([3.0, -1.0, 0.25])}
    writer = BlobWriter()
    records = [writer.add(name, value) for name, value in fields.items()]
    blobs = writer.blobs()
    assert sorted(blobs) == ["f16", "f32", "u8"] and blobs["f16"].numel() == 5
    reader = BlobReader(blobs)
    for record in records:
        name, value = reader.take(record)
        assert value.dtype == fields[name].dtype and torch.equal(value, fields[name])
    reader.check_used()
    short = BlobReader({key: blob[:-1] for key, blob in blobs.items()})
    with pytest.raises(ValueError, match="past the end"):
        for record in records:
            short.take(record)


def test_module_delta_round_trips_replaced_removed_and_new_layers():
    base = models.create("lenet5", num_classes=10)
    fresh = describe_modules(base)
    model = factorize(weight_share(base, WeightShareConfig(bits=3, exclude=("classifier.0",))),
                      LowRankConfig(method="svd", energy=0.5), input_shape=(1, 28, 28))
    del model.features[7]
    records = describe_modules(model)
    delta = modules_delta(records, fresh)
    assert delta["drop"] == ["features.7"]
    assert any(path.startswith("classifier.0.") for path, _, _ in delta["set"])  # new child paths
    assert sorted(map(str, expand_modules(delta, fresh))) == sorted(map(str, records))
    assert modules_delta(fresh, fresh) == {"drop": [], "set": []}


def _sparse_shared():
    torch.manual_seed(0)
    model = sparsify(models.create("lenet5", num_classes=10), SparsityConfig(sparsity=0.95))
    shared = weight_share(model, WeightShareConfig(bits=4))
    with torch.no_grad():
        for module in shared.modules():
            if hasattr(module, "centroids") and module.bias is not None:
                module.bias.normal_()  # trained biases are not float16-exact
    return shared


def test_container_overhead_is_small_on_lenet5():
    data = pack_model(_sparse_shared(), PackOptions(huffman=True))
    header_length = int.from_bytes(data[:8], "little")
    entries = json.loads(data[8:8 + header_length])
    assert set(entries) <= {"__metadata__", "header", "u8", "f16", "f32"}  # one entry per stored dtype
    start, end = entries["header"]["data_offsets"]
    # safetensors JSON (with the 88-byte whole-file checksum entry) + compressed torchslim header
    # (format 1: 3.9 kB)
    assert header_length + end - start < 1300


def test_side_data_rounded_to_float16_is_stored_in_half_the_bytes():
    model = _sparse_shared()
    before = len(pack_model(model))
    with torch.no_grad():
        for module in model.modules():
            for name in ("centroids", "bias"):
                value = getattr(module, name, None)
                if isinstance(value, torch.Tensor):
                    value.copy_(value.half().float())
    floats = sum(m.centroids.numel() for m in model.modules() if hasattr(m, "centroids"))
    floats += sum(m.bias.numel() for m in model.modules() if hasattr(m, "centroids") and m.bias is not None)
    after = pack_model(model)
    assert b'"f32"' not in after[:int.from_bytes(after[:8], "little") + 8]  # no float32 entry left
    assert 2 * floats <= before - len(after) <= 2 * floats + 100  # 2 bytes per value, plus that entry


@pytest.mark.parametrize("value, message", [("3", "newer torchslim"), ("eJzLSM3JyQcABiwCFQ==", "older packed format")])
def test_other_formats_are_refused_with_a_clear_message(value, message, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.packed"
    save_file({"u8": torch.zeros(4, dtype=torch.uint8)}, str(path), metadata={"torchslim.packed": value})
    with pytest.raises(UserError, match=message):
        torchslim.load(path)


def test_packed_file_keeps_the_dtype_of_every_tensor(tmp_path):
    model = _sparse_shared()
    save_packed(model, tmp_path / "m.packed", PackOptions(huffman=True))
    loaded = torchslim.load(tmp_path / "m.packed")
    for (key, value), (_, again) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert value.dtype == again.dtype and torch.equal(value, again), key
