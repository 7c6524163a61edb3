"""A real 2-process DDP run with torchrun (gloo on CPU)."""

import json
import os
import subprocess
import sys

import torch

from tests.conftest import REPO

WORKER = r"""
import os, sys, torch
from torchslim import models
from torchslim.data import load_dataset
from torchslim.train import TrainConfig, fit, init_from_env
from torchslim.train.distributed import shutdown
info = init_from_env("cpu")
torch.manual_seed(100 + info.rank)  # different starting weights per rank: DDP must sync them
model = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))
train = load_dataset("digits", "train")
fit(model, train, TrainConfig(epochs=2, batch_size=32, seed=0, augment=True), progress=False)
torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{info.rank}.pt"))
shutdown()  # leave the group before exit, as the CLI does
"""


def _torchrun(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_two_processes_keep_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = _torchrun(tmp_path, str(script), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_cli_train_under_torchrun(tmp_path):
    out = tmp_path / "ddp.safetensors"
    proc = _torchrun(tmp_path, "-m", "torchslim.cli.main", "train", "--model", "lenet300", "--data", "digits",
                     "--epochs", "3", "--batch-size", "32", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["top1"] > 0.8 and out.exists()
    assert not (tmp_path / "ddp.safetensors.ckpt").exists()
