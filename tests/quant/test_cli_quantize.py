import json

import pytest
import torch

import torchslim
from torchslim import models
from torchslim.quant import FrozenConv2d
from torchslim.quant.packed import load_packed

from ..conftest import run_cli


def _float_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "float.safetensors"
    torchslim.save(models.create("vgg11", width_mult=0.0625), path, input_shape=(3, 32, 32))
    return path


def test_quantize_end_to_end_json(tmp_path):
    source = _float_file(tmp_path)
    out, packed = tmp_path / "q.safetensors", tmp_path / "q.packed"
    result = run_cli("quantize", source, "--method", "hwgq-bwn", "--epochs", "1", "--alt-update", "--alt-init", "--data",
                     "digits-32", "--subset", "200", "--calib", "32", "--out", out, "--packed", packed, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) >= {"top1_before", "top1_after", "size_bytes_float", "size_bytes_packed", "compression_ratio"}
    assert 0 <= payload["top1_after"] <= 1
    assert payload["size_bytes_packed"] == packed.stat().st_size
    assert payload["compression_ratio"] > 3
    assert all(r["error_after"] <= r["error_before"] for r in payload["alt_update"])
    assert len(payload["alt_init"]) == len(payload["alt_update"]) == 7
    assert all(r["error_after"] <= r["error_before"] for r in payload["alt_init"])
    assert len(payload["act_scales"]) == 8 and all(s > 0 for s in payload["act_scales"].values())
    frozen = torchslim.load(out)
    scaled = frozen.get_submodule(next(iter(payload["act_scales"])))
    assert float(scaled.levels[-1]) == pytest.approx(1.894 * next(iter(payload["act_scales"].values())), rel=1e-3)
    assert any(isinstance(m, FrozenConv2d) for m in frozen.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(load_packed(packed)(x), frozen(x), atol=1e-4)


def test_bad_method_and_bits_are_one_line_errors(tmp_path):
    source = _float_file(tmp_path)
    out = tmp_path / "q.safetensors"
    for extra, message in ((["--method", "binary"], "unknown quantization method"),
                           (["--method", "hwgq-bwn", "--act-bits", "7"], "cannot use 7 bits"),
                           (["--method", "int8"], ".onnx"),
                           (["--method", "hwgq-bwn", "--act-scale", "max"], "--act-scale"),
                           (["--method", "bwn", "--temperature", "2"], "need --teacher")):
        result = run_cli("quantize", source, *extra, "--data", "digits-32", "--subset", "50", "--out", out)
        assert result.returncode == 2
        assert result.stderr.startswith("torchslim: error:") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not out.exists()
