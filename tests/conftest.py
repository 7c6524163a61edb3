import os
import subprocess
import sys

import pytest
import torch

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def single_thread():
    """Body of the folders' autouse one-thread fixture: small tensors are faster and far more
    predictable with one intra-op thread on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)
    yield


def run_cli(*args, env=None, timeout=600):
    """Run ``python -m torchslim ARGS`` in a fresh process; returns CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "torchslim", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)
