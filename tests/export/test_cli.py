import json
import os

import pytest
import torch

import torchslim
from tests.conftest import run_cli

from ..sparse.helpers import trained_mlp

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _saved_mlp(tmp_path):
    path = tmp_path / "mlp.safetensors"
    torchslim.save(trained_mlp(), path, input_shape=(1, 8, 8))
    return path


def test_compress_weights_then_export_packed(tmp_path):
    source = _saved_mlp(tmp_path)
    out, packed = tmp_path / "shared.safetensors", tmp_path / "shared.packed"
    result = run_cli("compress-weights", source, "--method", "kmeans", "--bits", "4", "--data", "digits",
                     "--finetune-epochs", "1", "--out", out, "--json", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["top1"] >= report["top1_before"] - 0.05 and 0 <= report["top1"] <= 1
    assert report["compression_ratio"] > 4
    model = torchslim.load(out)
    assert max(torch.unique(m.weight.detach()).numel() for m in model.modules() if hasattr(m, "codes")) <= 16
    exported = run_cli("export", out, "--format", "packed", "--out", packed, "--huffman", "--json", env=ONE_THREAD)
    assert exported.returncode == 0, exported.stderr
    info = json.loads(exported.stdout.strip().splitlines()[-1])
    assert info["size_bytes"] == os.path.getsize(packed)
    assert info["compression_ratio"] == info["float32_bytes"] / info["size_bytes"] > 4
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(torchslim.load(packed)(x), model(x))


def test_export_of_a_frozen_model_folds_bn_unless_told_and_shrinks_side_data(tmp_path):
    from torchslim import models
    from torchslim.quant import FrozenConv2d, FrozenLinear, QuantConfig, freeze, quantize
    from torchslim.quant.packed import fold_frozen_batchnorm

    torch.manual_seed(0)
    frozen = freeze(quantize(models.create("vgg11", width_mult=0.0625), QuantConfig(method="xnor")).eval())
    source = tmp_path / "q.safetensors"
    torchslim.save(frozen, source, input_shape=(3, 32, 32))
    sizes = {}
    for name, flags in (("folded", []), ("exact", ["--no-fold-bn"]), ("int8", ["--side-dtype", "int8"])):
        result = run_cli("export", source, "--format", "packed", "--out", tmp_path / name, "--json", *flags,
                         env=ONE_THREAD)
        assert result.returncode == 0, result.stderr
        sizes[name] = json.loads(result.stdout.strip().splitlines()[-1])["size_bytes"]
    assert sizes["int8"] < sizes["folded"] < sizes["exact"]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(torchslim.load(tmp_path / "exact")(x), frozen(x))
    assert torch.equal(torchslim.load(tmp_path / "folded")(x), fold_frozen_batchnorm(frozen)(x))
    lossy, folded = torchslim.load(tmp_path / "int8"), fold_frozen_batchnorm(frozen)
    for name, layer in folded.named_modules():
        if isinstance(layer, FrozenConv2d | FrozenLinear):  # codes exact; scales within half an int8 step
            assert torch.equal(lossy.get_submodule(name).codes, layer.codes)
            step = float(layer.scale.abs().max()) / 127
            assert (lossy.get_submodule(name).scale - layer.scale).abs().max() <= step / 2 * 1.001


def test_bad_input_is_one_line_and_leaves_no_file(tmp_path):
    source = _saved_mlp(tmp_path)
    out = tmp_path / "never.safetensors"
    result = run_cli("compress-weights", source, "--method", "magnitude", "--sparsity", "1.5", "--data", "digits",
                     "--out", out, env=ONE_THREAD)
    assert result.returncode == 2
    assert result.stderr.startswith("torchslim: error:") and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(source.read_bytes()[:1000])
    result = run_cli("export", broken, "--format", "onnx", "--out", tmp_path / "m.onnx", env=ONE_THREAD)
    assert result.returncode == 2 and "torchslim: error:" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchslim: error:"), result.stderr
    return lines[0]


def test_truncated_packed_file_is_one_line_error(tmp_path):
    source, packed = _saved_mlp(tmp_path), tmp_path / "mlp.packed"
    assert run_cli("export", source, "--format", "packed", "--out", packed, env=ONE_THREAD).returncode == 0
    broken = tmp_path / "broken.packed"
    broken.write_bytes(packed.read_bytes()[:-100])
    for fmt, out in (("onnx", tmp_path / "m.onnx"), ("packed", tmp_path / "again.packed")):
        _one_error_line(run_cli("export", broken, "--format", fmt, "--out", out, env=ONE_THREAD))
        assert not out.exists()


@pytest.mark.parametrize("opset", ["3", "6", "99"])
def test_unsupported_opset_is_one_line_error(tmp_path, opset):
    from torch.onnx import _constants

    source, out = _saved_mlp(tmp_path), tmp_path / "m.onnx"
    line = _one_error_line(run_cli("export", source, "--format", "onnx", "--opset", opset, "--out", out,
                                   env=ONE_THREAD))
    assert f"--opset must be in {_constants.ONNX_MIN_OPSET}.." in line and line.endswith(f"got {opset}")
    assert not out.exists()


def test_baseline_is_the_same_from_the_model_file_and_its_packed_copy(tmp_path):
    model = trained_mlp()
    model.torchslim_meta = {"top1": 0.9, "data": "digits", "train": {"epochs": 6, "lr": 0.05},  # records: file only
                            "compress_weights": {"method": "kmeans", "source": str(tmp_path / "stages" / "a.st")}}
    source, packed = tmp_path / "mlp.safetensors", tmp_path / "mlp.packed"
    torchslim.save(model, source, input_shape=(1, 8, 8))
    baselines = []
    for path, out in ((source, packed), (packed, tmp_path / "again.packed")):
        result = run_cli("export", path, "--format", "packed", "--out", out, "--json", env=ONE_THREAD)
        assert result.returncode == 0, result.stderr
        baselines.append(json.loads(result.stdout.strip().splitlines()[-1])["float32_bytes"])
    assert torchslim.load(packed).torchslim_meta != torchslim.load(source).torchslim_meta  # the notes differ
    assert baselines[0] == baselines[1]


def _main_json(capsys, *argv) -> dict:
    from torchslim.cli.main import main

    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_layer_sparsity_then_folded_per_layer_weight_sharing(tmp_path, capsys):
    source = _saved_mlp(tmp_path)
    pruned, shared = tmp_path / "pruned.safetensors", tmp_path / "shared.safetensors"
    report = _main_json(capsys, "compress-weights", source, "--method", "magnitude", "--sparsity", "0.2",
                        "--layer-sparsity", "classifier.0=0.9, classifier.3=0.5", "--data", "digits", "--out", pruned,
                        "--json")
    layers = {row["name"]: row["sparsity"] for row in report["layers"]}
    assert layers == {"classifier.0": pytest.approx(0.9, abs=1e-3), "classifier.3": pytest.approx(0.5, abs=1e-3),
                      "classifier.6": pytest.approx(0.2, abs=1e-3)}
    report = _main_json(capsys, "compress-weights", pruned, "--method", "kmeans", "--fold-bn", "--bits", "5",
                        "--layer-bits", "classifier.0=3", "--side-dtype", "float16", "--data", "digits", "--out",
                        shared, "--json")
    model = torchslim.load(shared)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert [m.table_size for m in model.modules() if hasattr(m, "codes")] == [8, 32, 32]
    for module in model.modules():
        if hasattr(module, "codes"):
            assert torch.equal(module.centroids.half().float(), module.centroids)
            assert torch.equal(module.bias.half().float(), module.bias)
            assert int((module.codes == 0).sum()) == int((module.weight == 0).sum())  # pruned stays pruned
    assert report["top1"] >= report["top1_before"] - 0.1


@pytest.mark.parametrize("flags, message", [
    (["--method", "magnitude", "--layer-sparsity", "classifier.9=0.5"], "unknown layer in --layer-sparsity"),
    (["--method", "magnitude", "--layer-sparsity", "classifier.0=1.0"], "must be in [0, 1)"),
    (["--method", "magnitude", "--layer-sparsity", "classifier.0"], "expected NAME=VALUE"),
    (["--method", "kmeans", "--layer-bits", "classifier.0=0"], "must be in 1..16"),
    (["--method", "kmeans", "--layer-sparsity", "classifier.0=0.5"], "applies to magnitude"),
])
def test_bad_per_layer_options_are_one_line_errors(flags, message, tmp_path, capsys):
    from torchslim.cli.main import main

    source, out = _saved_mlp(tmp_path), tmp_path / "never.safetensors"
    assert main(["compress-weights", str(source), *flags, "--data", "digits", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("torchslim: error:") and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--method", "kmeans", "--sparsity", "0.5"], "--sparsity applies to magnitude only, not to --method kmeans"),
    (["--method", "kmeans", "--subvector", "3"], "--subvector applies to pq or qcnn only"),
    (["--method", "pq", "--conv-bits", "3"], "--conv-bits applies to kmeans only, not to --method pq"),
    (["--method", "pq", "--init", "density"], "--init applies to kmeans only"),
    (["--method", "pq", "--calib-samples", "64"], "--calib-samples applies to qcnn only"),
    (["--method", "svd", "--scope", "global"], "--scope applies to magnitude only"),
    (["--method", "kmeans", "--schedule", "agp"], "--schedule applies to magnitude only"),
    (["--method", "magnitude", "--bits", "4"], "--bits applies to kmeans, pq or qcnn only"),
    (["--method", "magnitude", "--side-dtype", "float32"], "--side-dtype applies to kmeans only"),
    (["--method", "qcnn", "--target-macs", "0.5"], "--target-macs applies to svd or tucker only"),
])
def test_flags_of_other_methods_are_one_line_errors(flags, message, tmp_path, capsys):
    from torchslim.cli.main import main

    source, out = _saved_mlp(tmp_path), tmp_path / "never.safetensors"
    assert main(["compress-weights", str(source), *flags, "--data", "digits", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("torchslim: error:") and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
