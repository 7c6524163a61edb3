import pytest
import torch

import torchslim
from torchslim.quant import freeze

from ..conftest import single_thread

_one_thread = pytest.fixture(autouse=True)(single_thread)


def frozen_round_trip(qmodel, x, tmp_path):
    """Freeze ``qmodel`` (eval), check frozen == eval and save/load == frozen on ``x``; the reloaded model."""
    qmodel.eval()
    frozen = freeze(qmodel)
    assert torch.equal(frozen(x), qmodel(x))
    torchslim.save(frozen, tmp_path / "f.safetensors")
    loaded = torchslim.load(tmp_path / "f.safetensors")
    assert torch.equal(loaded(x), frozen(x))
    return loaded
