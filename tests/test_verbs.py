"""Every technique is one verb ``verb(model, config, data)``: it returns a compressed copy, leaves the
caller's model bit for bit as it was, and records its own provenance in the copy's metadata."""

import copy

import pytest
import torch

from torchslim import models
from torchslim.codebook import PQConfig, WeightShareConfig, product_quantize, weight_share
from torchslim.data import load_dataset
from torchslim.deploy import CompileConfig
from torchslim.deploy import compile as compile_binary
from torchslim.distill import DistillConfig, distill
from torchslim.errors import UserError
from torchslim.export import ExportConfig, export
from torchslim.lowrank import LowRankConfig, factorize
from torchslim.prune import PruneConfig, prune
from torchslim.quant import QATConfig, QuantConfig, freeze, quantize, train_quantized
from torchslim.sparse import SparsityConfig, sparsify
from torchslim.train import TrainConfig

ONE_EPOCH = TrainConfig(epochs=1, batch_size=32, augment=False, lr=0.01)


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits-32", "train").subset(96)


def _lenet():
    torch.manual_seed(0)
    return models.create("lenet5", num_classes=10, in_channels=3, input_size=(32, 32)).eval()


def _frozen_xnor():
    return freeze(quantize(_lenet(), QuantConfig(method="xnor")))


# name -> (make the caller's model, run the verb on it and the data, the key its provenance is under)
VERBS = {
    "prune": (_lenet, lambda m, d: prune(m, PruneConfig(criterion="taylor", ratio=0.3), d).model, "pruned"),
    "quantize": (_lenet, lambda m, d: quantize(m, QuantConfig(method="bwn")), "quant"),
    "train_quantized": (_lenet, lambda m, d: train_quantized(
        m, QATConfig(quant=QuantConfig(method="bwn"), epochs=1, batch_size=32, calib=32), d).model, "qat"),
    "freeze": (lambda: quantize(_lenet(), QuantConfig(method="bwn")), lambda m, d: freeze(m), "quant"),
    "sparsify": (_lenet, lambda m, d: sparsify(m, SparsityConfig(sparsity=0.5, schedule="agp"), d,
                                               train_config=ONE_EPOCH), "sparsity"),
    "weight_share": (_lenet, lambda m, d: weight_share(m, WeightShareConfig(bits=3)), "weight_share"),
    "product_quantize": (_lenet, lambda m, d: product_quantize(
        m, PQConfig(method="qcnn", subvector=8, bits=2, calib_samples=16, iters=3, qcnn_iters=1, max_rows=256,
                    exclude=("features.0", "classifier.0")), d), "pq"),  # one small layer: Q-CNN is slow
    "factorize": (_lenet, lambda m, d: factorize(m, LowRankConfig(method="svd", energy=0.5)), "lowrank"),
    "distill": (_lenet, lambda m, d: distill(models.create("lenet5", num_classes=10, in_channels=3,
                                                           input_size=(32, 32), width_mult=0.5),
                                             DistillConfig(), d, teacher=m, train_config=ONE_EPOCH,
                                             progress=False).model, "distill"),
    "compile": (_frozen_xnor, lambda m, d: compile_binary(m, CompileConfig(chain=False), d), "compiled"),
}


def _snapshot(model):
    return {key: value.clone() for key, value in model.state_dict().items()}, copy.deepcopy(
        getattr(model, "torchslim_meta", {}))


@pytest.mark.parametrize("name", sorted(VERBS))
def test_verb_returns_a_copy_and_leaves_the_callers_model(name, data):
    make, run, key = VERBS[name]
    model = make()
    state, meta = _snapshot(model)
    out = run(model, data)
    assert out is not model
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # bit for bit
    assert getattr(model, "torchslim_meta", {}) == meta  # the notes went to the copy only
    assert key in out.torchslim_meta


def test_provenance_is_the_config_given():
    model = _lenet()
    config = SparsityConfig(sparsity=0.25)
    assert SparsityConfig.from_dict(sparsify(model, config).torchslim_meta["sparsity"]) == config
    shared = WeightShareConfig(bits=4, conv_bits=6)
    assert WeightShareConfig.from_dict(weight_share(model, shared).torchslim_meta["weight_share"]) == shared
    cut = PruneConfig(criterion="l1", ratio=0.25)
    assert PruneConfig.from_dict(prune(model, cut).model.torchslim_meta["pruned"]) == cut


def test_qat_config_round_trips_through_a_dict():
    config = QATConfig(quant=QuantConfig(method="hwgq-bwn", act_bits=2), epochs=2, alt_update=True)
    assert config.alt_guard is True  # guarded unless told
    assert QATConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("fmt", ["packed", "onnx"])
def test_export_writes_the_file_it_reports_and_leaves_the_model(fmt, tmp_path):
    model = _frozen_xnor() if fmt == "packed" else _lenet()
    state, meta = _snapshot(model)
    path = tmp_path / f"m.{fmt}"
    info = export(model, ExportConfig(format=fmt), path=path)
    assert info["size_bytes"] == path.stat().st_size > 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert getattr(model, "torchslim_meta", {}) == meta


def test_export_refuses_an_unknown_format():
    with pytest.raises(UserError, match="choose from: onnx, openvino, packed"):
        ExportConfig(format="tflite")


def test_compile_options_override_only_the_fields_they_name():
    compiled = compile_binary(_frozen_xnor(), CompileConfig(chain=False, float_threads=None), threads=1)
    assert compiled.torchslim_meta["compiled"] == {"threads": 1, "chain": False, "float_threads": None, "exact": True}
    assert compiled.torchslim_meta["chained_layers"] == []
    with pytest.raises(UserError, match="unknown compile option 'thread'"):
        compile_binary(_frozen_xnor(), thread=1)
