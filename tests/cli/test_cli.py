import json

import pytest

from tests.conftest import run_cli


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits.safetensors"
    proc = run_cli("train", "--model", "lenet300", "--data", "digits", "--epochs", "4", "--batch-size", "64",
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return out, _last_json(proc.stdout)


def test_train_prints_json_last_and_saves(trained):
    out, result = trained
    assert out.exists() and 0.8 <= result["top1"] <= 1 and result["params"] > 0
    assert not out.with_name(out.name + ".ckpt").exists()


def test_eval_reproduces_the_training_top1(trained):
    out, result = trained
    proc = run_cli("eval", out, "--data", "digits", "--json")
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout)["top1"] == pytest.approx(result["top1"], abs=1e-9)


def test_profile_file_needs_no_shape_flags(trained):
    out, _ = trained
    proc = run_cli("profile", out, "--json", "--repeats", "3")
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    assert result["size_bytes"] == out.stat().st_size
    assert result["input_shape"] == [1, 8, 8] and result["latency_ms"] > 0
    assert result["params"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 + 2 * (300 + 100)


def test_profile_zoo_model():
    proc = run_cli("profile", "--model", "vgg14", "--json", "--repeats", "2", "--batch-sizes", "1")
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    assert result["params"] == 9_414_090 and result["macs"] == 242_422_784


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "vgg15", "--data", "digits", "--out", "x.safetensors"], "did you mean 'vgg16'"),
        (["train", "--model", "lenet300", "--data", "digitz", "--out", "x.safetensors"], "unknown data set"),
        (["train", "--model", "vgg14", "--data", "digits", "--out", "x.safetensors"], "cannot take input"),
        (["profile", "--model", "vgg14", "--input", "3x32"], "CxHxW"),
        (["profile", "missing.safetensors"], "not found"),
        (["eval", "pyproject.toml", "--data", "digits"], "not a torchslim model"),
        (["train", "--model", "lenet300"], "required"),
        (["frobnicate"], "invalid choice"),
        (["train", "--model", "lenet300", "--data", "digits", "--out", "x.safetensors", "--bogus"],
         "error: unrecognized arguments: --bogus"),
        (["train", "--model", "lenet300", "--epochs", "two"], "error: train: argument --epochs"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchslim: error:"), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_eval_on_data_of_the_wrong_shape(trained):
    out, _ = trained
    proc = run_cli("eval", out, "--data", "digits-32")
    assert proc.returncode == 2 and "cannot take input 3x32x32 from digits-32: it takes 1x8x8" in proc.stderr
