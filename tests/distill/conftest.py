import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(_two_threads):
    # The distillation tests train tiny networks: one thread avoids sync overhead on a busy 2-core machine.
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)
