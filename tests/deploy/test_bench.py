"""`torchslim bench`: the JSON contract, consistent ratios, and one-line errors for bad input."""

import json
import sys

import pytest
import torch

import torchslim
from tests.conftest import run_cli
from torchslim import models
from torchslim.quant import QuantConfig, quantize


@pytest.fixture(scope="module")
def quantized_file(tmp_path_factory):
    torch.manual_seed(0)
    model = quantize(models.create("vgg14", width_mult=0.125), QuantConfig(method="xnor")).eval()
    path = tmp_path_factory.mktemp("bench") / "xnor.safetensors"
    torchslim.save(model, str(path))
    return path


def test_json_holds_every_runtime_and_consistent_ratios(quantized_file):
    proc = run_cli("bench", quantized_file, "--threads", "1,2", "--repeats", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    first = result["runs"][0]
    assert [(r["batch"], r["threads"]) for r in result["runs"]] == [(1, 1), (1, 2)]
    # the headline numbers are the batch-1 medians at the first thread count
    assert result["binary_ms"] == first["binary_ms"] > 0
    assert result["float_ms"] == first["float_ort_ms"] > 0 and result["int8_ms"] == first["int8_ort_ms"] > 0
    assert result["speedup_binary"] == pytest.approx(result["float_ms"] / result["binary_ms"], rel=1e-12)
    assert result["speedup_int8"] == pytest.approx(result["float_ms"] / result["int8_ms"], rel=1e-12)
    binary_convs = sum(1 for m in models.create("vgg14", width_mult=0.125).features
                       if isinstance(m, torch.nn.Conv2d)) - 1  # the first conv stays float
    assert len(result["layers"]) == binary_convs
    assert all(row["speedup"] == pytest.approx(row["float_ms"] / row["binary_ms"], rel=1e-12)
               for row in result["layers"])
    memory = result["memory"]
    assert memory["binary_layers"] == binary_convs and memory["packed_bytes"] * 8 < memory["float32_bytes"]


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads takes positive integers"),
    (["--batch", "one"], "--batch takes positive integers"),
    (["--repeats", "0"], "--repeats must be at least 1"),
], ids=["threads", "batch", "repeats"])
def test_bad_flags_are_one_line_exit_2(quantized_file, args, message):
    proc = run_cli("bench", quantized_file, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_a_float_model_is_refused(tmp_path, capsys):
    from torchslim.cli.main import main

    path = tmp_path / "float.safetensors"
    torchslim.save(models.create("lenet5"), str(path))
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no quantized or product-quantized layers" in err


def test_a_product_quantized_model_is_timed_on_lookup_tables(tmp_path):
    from torchslim.codebook import PQConfig, product_quantize

    torch.manual_seed(0)
    model = product_quantize(models.create("vgg14", width_mult=0.125).eval(), PQConfig(subvector=4, bits=4))
    path = tmp_path / "pq.safetensors"
    torchslim.save(model, str(path), input_shape=(3, 32, 32))
    proc = run_cli("bench", path, "--threads", "1", "--batch", "1,2", "--repeats", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["batch"], r["threads"]) for r in result["runs"]] == [(1, 1), (2, 1)]
    first = result["runs"][0]
    assert result["lookup_ms"] == first["lookup_ms"] > 0
    assert result["float_ms"] == (first["float_ort_ms"] or first["float_eager_ms"]) > 0
    assert result["speedup_lookup"] == pytest.approx(result["float_ms"] / result["lookup_ms"], rel=1e-12)
    pq_layers = [name for name, m in model.named_modules() if type(m).__name__ in ("PQConv2d", "PQLinear")]
    assert result["lookup_layers"] == pq_layers and pq_layers  # every PQ layer swapped
    if result["isa"] != "reference":  # with a compiler every one runs natively (all stride-1 convs)
        assert result["native_layers"] == pq_layers and result["decoded_layers"] == []


def test_openvino_fp32_and_int8_are_timed_beside_the_others(quantized_file):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    proc = run_cli("bench", quantized_file, "--repeats", "3", "--no-layers", "--openvino", "require", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    first = result["runs"][0]
    assert result["float_openvino_ms"] == first["float_openvino_ms"] > 0
    assert result["int8_openvino_ms"] == first["int8_openvino_ms"] > 0
    best = min(first["int8_ort_ms"], first["int8_openvino_ms"])
    assert result["binary_vs_best_int8"] == pytest.approx(best / first["binary_ms"], rel=1e-12)
    paths = result["isa_paths"]
    assert paths["binary"] == result["isa"] and paths["binary"] in ("avx512-vpopcntdq", "popcnt+avx2+bmi", "portable")
    assert paths["int8_openvino"] and paths["float_openvino"]  # the plugin's kernels, e.g. brgconv_avx512_I8
    assert "OV int8" in proc.stdout and "ISA paths: binary: " + result["isa"] in proc.stdout


def test_without_openvino_bench_notes_the_extra_and_require_is_one_line(quantized_file, monkeypatch, capsys):
    from torchslim.cli.main import main

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert main(["bench", str(quantized_file), "--openvino", "require"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("torchslim: error:") and "torchslim[openvino]" in err[0]
    assert main(["bench", str(quantized_file), "--repeats", "2", "--no-layers", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "float_openvino_ms" not in result["runs"][0] and "torchslim[openvino]" in result["note"]
    assert "torchslim[openvino]" in captured.err
