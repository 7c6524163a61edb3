import pytest
import torch

from torchslim import models
from torchslim.errors import UserError
from torchslim.quant.int8 import quantize_int8

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.create("vgg11", width_mult=0.125).eval()
    batches = [torch.randn(16, 3, 32, 32) for _ in range(2)]
    return model, batches


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_static_int8_close_to_float(backend, setup, tmp_path):
    model, batches = setup
    int8 = quantize_int8(model, batches, (3, 32, 32), backend=backend, path=tmp_path / "q.onnx")
    x = batches[0][:4]
    with torch.no_grad():
        reference, out = model(x), int8(x)
    assert out.shape == reference.shape
    error = (out - reference).norm() / reference.norm()
    assert error < 0.2
    if backend == "onnxruntime":
        assert (tmp_path / "q.onnx").stat().st_size < 0.5 * sum(p.numel() * 4 for p in model.parameters()) + 30000


def test_unknown_backend(setup):
    with pytest.raises(UserError, match="choose from"):
        quantize_int8(setup[0], setup[1], (3, 32, 32), backend="tensorrt")
