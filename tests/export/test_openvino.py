"""OpenVINO IR export (fp32 and NNCF int8), OpenVINO as a latency runtime, and the one-line
error without the extra."""
import json
import sys

import numpy as np
import pytest
import torch

import torchslim
from tests.conftest import run_cli
from torchslim import models

from ..sparse.helpers import trained_mlp

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _saved_mlp(tmp_path):
    path = tmp_path / "mlp.safetensors"
    torchslim.save(trained_mlp(), path, input_shape=(1, 8, 8))
    return path


def _run_ir(xml, x: torch.Tensor) -> np.ndarray:
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(ov.Core().read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(x[i:i + 1].numpy())[0] for i in range(len(x))])


def test_fp32_ir_matches_torch(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    source, out = _saved_mlp(tmp_path), tmp_path / "mlp.xml"
    proc = run_cli("export", source, "--format", "openvino", "--out", out, "--json", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["precision"] == "fp32" and info["max_abs_diff"] < 1e-4
    assert info["size_bytes"] == out.stat().st_size + (tmp_path / "mlp.bin").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.bin", "mlp.safetensors", "mlp.xml"]  # no leftovers
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = torchslim.load(source).eval()(x).numpy()
    np.testing.assert_allclose(_run_ir(out, x), want, rtol=1e-4, atol=1e-4)


def test_int8_ir_is_calibrated_on_data_and_keeps_the_predictions(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from torchslim.data import load_dataset
    from torchslim.data.calibration import calibration_images

    source, out = _saved_mlp(tmp_path), tmp_path / "q.xml"
    proc = run_cli("export", source, "--format", "openvino", "--data", "digits", "--calib", "200", "--out", out,
                   "--json", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["precision"] == "int8"
    ov = pytest.importorskip("openvino")
    kinds = {op.get_element_type().get_type_name() for op in ov.Core().read_model(str(out)).get_ops()
             if op.get_type_name() == "Constant"}
    assert "i8" in kinds  # the weights are stored as int8
    test = load_dataset("digits", split="test")
    x = torch.cat(calibration_images(test, 10_000))  # every test image, normalised as in training
    with torch.no_grad():
        want = torchslim.load(source).eval()(x)
    got = torch.from_numpy(_run_ir(out, x))
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.95  # int8 keeps the float model's answers
    assert (got - want).abs().mean() < 0.05 * want.abs().mean()  # int8 rounding, not a different network


def test_prune_to_a_latency_target_on_openvino(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from torchslim.prune import PruneConfig, prune

    torch.manual_seed(0)
    model = models.create("vgg11", width_mult=0.25)
    result = prune(model, config=PruneConfig(criterion="l1", target_latency=0.7, latency_runtime="openvino",
                                             scope="greedy", round_to=4))
    t = result.latency
    assert t["runtime"] == "openvino" and t["before_ms"] > 0 and t["after_ms"] > 0
    assert result.macs_after < result.macs_before


@pytest.mark.parametrize("argv", [
    ["export", "{src}", "--format", "openvino", "--out", "{dir}/m.xml"],
    ["prune", "{src}", "--data", "digits", "--target-latency", "0.7", "--latency-runtime", "openvino",
     "--out", "{dir}/m.xml"],
], ids=["export", "prune"])
def test_without_the_extra_each_entry_says_which_to_install(argv, tmp_path, monkeypatch, capsys):
    from torchslim.cli.main import main

    source = _saved_mlp(tmp_path)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert main([a.format(src=source, dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("torchslim: error:") and "pip install 'torchslim[openvino]'" in err[0]
    assert not (tmp_path / "m.xml").exists()


def test_an_out_path_without_xml_is_refused(tmp_path, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from torchslim.cli.main import main

    source = _saved_mlp(tmp_path)
    assert main(["export", str(source), "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert ".xml" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_the_runtime_module_matches_torch_at_any_batch_and_its_int8_stays_close():
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from torchslim.export.openvino import OpenVinoModule, runtime_pair

    torch.manual_seed(0)
    model = models.create("vgg11", width_mult=0.25).eval()
    g = torch.Generator().manual_seed(1)
    fp32, int8 = runtime_pair(model, (3, 32, 32), torch.randn(16, 3, 32, 32, generator=g))
    x = torch.randn(5, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = model(x)
    for threads in (1, 2):
        runtime = OpenVinoModule(fp32, threads)
        assert runtime.isa and all(isinstance(name, str) for name in runtime.isa)
        torch.testing.assert_close(runtime(x), want, rtol=1e-4, atol=1e-5)  # batch 5: a reshaped copy
        torch.testing.assert_close(runtime(x[:1]), want[:1], rtol=1e-4, atol=1e-5)
    got = OpenVinoModule(int8, 1)(x)
    assert got.shape == want.shape
    assert (got - want).abs().mean() < 0.1 * want.abs().mean()  # int8 rounding of the same network
