import json
import os

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


def test_bad_input_is_one_line_and_leaves_no_file(tmp_path):
    source = _saved_mlp(tmp_path)
    out = tmp_path / "never.safetensors"
    result = run_cli("compress-weights", source, "--method", "magnitude", "--sparsity", "1.5", "--data", "digits",
                     "--out", out, env=ONE_THREAD)
    assert result.returncode == 2
    assert result.stderr.startswith("torchslim: error:") and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    broken = tmp_path / "broken.packed"
    broken.write_bytes(source.read_bytes()[:1000])
    result = run_cli("export", broken, "--format", "onnx", "--out", tmp_path / "m.onnx", env=ONE_THREAD)
    assert result.returncode == 2 and "torchslim: error:" in result.stderr
    assert not (tmp_path / "m.onnx").exists()
