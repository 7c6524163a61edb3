"""BN folding, ONNX export and loading in a fresh process."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.prune import PruneConfig, prune
from torchslim.prune.deploy import fold_batchnorm
from tests.conftest import REPO

from .conftest import build


@pytest.mark.parametrize("name", models.list_models())
def test_fold_batchnorm_keeps_the_output(name, tmp_path):
    model = prune(build(name), config=PruneConfig(criterion="l1", ratio=0.4, round_to=2)).model
    folded = fold_batchnorm(model)
    x = torch.randn(3, *model.input_shape)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-4, rtol=1e-4)
    def norms(m):
        return sum(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in m.modules())

    # Every BN right after a conv/linear is gone; binary nets put BN before the conv.
    assert norms(folded) < norms(model) or name.startswith("binary")
    torchslim.save(folded, tmp_path / "f.safetensors")
    with torch.no_grad():
        assert torch.equal(torchslim.load(tmp_path / "f.safetensors")(x), folded(x))


@pytest.mark.parametrize("name", ["resnet20", "shufflenetv2", "lenet5"])
def test_pruned_model_exports_to_onnx(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = prune(build(name), config=PruneConfig(criterion="l2", target_macs=0.5)).model.eval()
    x = torch.randn(1, *model.input_shape)
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], dynamo=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(y), model(x), atol=1e-4, rtol=1e-4)


def test_pruned_model_loads_in_a_fresh_process(tmp_path):
    script = (
        "import torch, torchslim\n"
        "torch.set_num_threads(1)\n"
        "from torchslim.prune import prune, PruneConfig\n"
        "from tests.prune.conftest import build\n"
        "m = prune(build('shufflenetv2'), config=PruneConfig(criterion='bn-scale', "
        "target_macs=0.5)).model.eval()\n"
        "x = torch.randn(2, 3, 32, 32)\n"
        f"torchslim.save(m, r'{tmp_path}/p.safetensors')\n"
        f"torch.save({{'x': x, 'y': m(x).detach()}}, r'{tmp_path}/io.pt')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    expected = torch.load(tmp_path / "io.pt")
    loaded = torchslim.load(tmp_path / "p.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(expected["x"]), expected["y"])
