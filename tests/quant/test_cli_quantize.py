import json

import pytest
import torch

import torchslim
from torchslim import models
from torchslim.quant import FrozenConv2d
from torchslim.export.frozen import load_frozen

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
    assert payload["teacher"] == "self" and payload["alt_guard"] is True  # the measured-best defaults
    assert len(payload["alt_init"]) == len(payload["alt_update"]) == 7
    assert all(r["error_after"] <= r["error_before"] for r in payload["alt_init"])
    assert len(payload["act_scales"]) == 8 and all(s > 0 for s in payload["act_scales"].values())
    frozen = torchslim.load(out)
    scaled = frozen.get_submodule(next(iter(payload["act_scales"])))
    assert float(scaled.levels[-1]) == pytest.approx(1.894 * next(iter(payload["act_scales"].values())), rel=1e-3)
    assert any(isinstance(m, FrozenConv2d) for m in frozen.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(load_frozen(packed)(x), frozen(x), atol=1e-4)


def test_packed_size_is_what_export_writes(tmp_path):
    """``size_bytes_packed`` is the size of the file ``torchslim export OUT --format packed`` writes."""
    source = _float_file(tmp_path)
    out, packed, exported = tmp_path / "q.safetensors", tmp_path / "q.packed", tmp_path / "e.packed"
    result = run_cli("quantize", source, "--method", "xnor", "--epochs", "0", "--data", "digits-32", "--subset", "64",
                     "--calib", "32", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    size = json.loads(result.stdout.strip().splitlines()[-1])["size_bytes_packed"]
    assert run_cli("export", out, "--format", "packed", "--out", exported).returncode == 0
    assert size == exported.stat().st_size
    result = run_cli("quantize", source, "--method", "xnor", "--epochs", "0", "--data", "digits-32", "--subset", "64",
                     "--calib", "32", "--out", out, "--packed", packed, "--json")
    assert json.loads(result.stdout.strip().splitlines()[-1])["size_bytes_packed"] == packed.stat().st_size == size


def test_packed_file_is_byte_for_byte_what_export_writes(tmp_path):
    """The --packed file equals, byte for byte, what export writes (in another process) from the
    same run's --out model."""
    source = _float_file(tmp_path)
    out, packed, exported = tmp_path / "q.safetensors", tmp_path / "q.packed", tmp_path / "e.packed"
    result = run_cli("quantize", source, "--method", "xnor", "--epochs", "0", "--data", "digits-32", "--subset", "64",
                     "--calib", "32", "--out", out, "--packed", packed, "--json")
    assert result.returncode == 0, result.stderr
    assert run_cli("export", out, "--format", "packed", "--out", exported).returncode == 0
    assert packed.read_bytes() == exported.read_bytes()


def test_a_model_that_cannot_take_the_data_is_a_one_line_error(tmp_path):
    source = _float_file(tmp_path)  # 3x32x32 input; digits are 1x8x8
    result = run_cli("quantize", source, "--method", "bwn", "--data", "digits", "--out", tmp_path / "q.safetensors")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot take input 1x8x8" in result.stderr and "Traceback" not in result.stderr


def test_bad_method_and_bits_are_one_line_errors(tmp_path):
    source = _float_file(tmp_path)
    out = tmp_path / "q.safetensors"
    for extra, message in ((["--method", "binary"], "unknown quantization method"),
                           (["--method", "hwgq-bwn", "--act-bits", "7"], "cannot use 7 bits"),
                           (["--method", "int8"], ".onnx"),
                           (["--method", "hwgq-bwn", "--act-scale", "max"], "--act-scale"),
                           (["--method", "bwn", "--no-teacher", "--temperature", "2"], "need --teacher"),
                           (["--method", "bwn", "--teacher", "--no-teacher"], "contradict"),
                           (["--method", "int8", "--no-teacher"], "--no-teacher apply to the other methods"),
                           (["--method", "hwgq-bwn", "--no-alt-guard"], "add --alt-update"),
                           (["--method", "bwn", "--act-bits", "2"], "keeps activations float"),
                           (["--method", "int8", "--packed", str(tmp_path / "x.packed")], "--packed apply to the other methods"),
                           (["--method", "int8", "--epochs", "2", "--alt-update"], "--epochs, --alt-update"),
                           (["--method", "hwgq-bwn", "--alt-guard"], "add --alt-update"),
                           (["--method", "hwgq-bwn", "--packed-side", "int8"], "add --packed FILE")):
        result = run_cli("quantize", source, *extra, "--data", "digits-32", "--subset", "50", "--out", out)
        assert result.returncode == 2
        assert result.stderr.startswith("torchslim: error:") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / "x.packed").exists()


def test_explicit_flags_restore_the_unguarded_update_without_a_teacher(tmp_path):
    source = _float_file(tmp_path)
    runs = {}
    for name, flags in (("default", []), ("old", ["--no-teacher", "--no-alt-guard"])):
        out = tmp_path / f"{name}.safetensors"
        result = run_cli("quantize", source, "--method", "hwgq-bwn", "--epochs", "1", "--alt-update", *flags,
                         "--data", "digits-32", "--subset", "200", "--calib", "32", "--out", out, "--json")
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert (runs["default"]["teacher"], runs["default"]["alt_guard"]) == ("self", True)
    assert (runs["old"]["teacher"], runs["old"]["alt_guard"]) == (None, False)
    # unguarded, every layer takes its refit, which lowers its own reconstruction error
    assert all(r["error_after"] <= r["error_before"] for r in runs["old"]["alt_update"])
    # the teacher changes the fine-tune: the two runs' training losses differ from the first epoch
    assert runs["default"]["history"][0] != runs["old"]["history"][0]
