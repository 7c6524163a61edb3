import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Small tensors: one thread is faster, and far more predictable on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
