"""A folder whose decoded pixels exceed the memory budget trains an epoch and evaluates with bounded memory."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO

WIDTH, HEIGHT, PER_CLASS = 1600, 1250, 100  # 2 classes x 100 photos of 6 MB decoded: 1.2 GB in all

# Runs in a fresh process so that ru_maxrss measures this work alone.  Linux carries a process's peak RSS
# across fork + exec, so the script is started by a small launcher rather than by the (large) test process.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
SCRIPT = r"""
import json, resource, sys
import torch
from torch import nn
from torchslim.data import load_dataset
from torchslim.train import TrainConfig, evaluate, fit

torch.set_num_threads(1)
root = sys.argv[1]
model = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
train = load_dataset("folder", "train", root=root, image_size=128)
test = load_dataset("folder", "test", root=root, image_size=128)
config = TrainConfig(epochs=1, batch_size=16, lr=0.02, optimizer="adam")
history = fit(model, train, config, eval_set=test, progress=False)
metrics = evaluate(model, test, batch_size=32)
print(json.dumps({
    "kind": type(train).__name__, "train": len(train), "test": metrics["n"], "before": before,
    "self_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "worker_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "epoch_top1": history["epochs"][0]["eval_top1"],
}))
"""


def write_photos(root, per_class: int = PER_CLASS):
    """Large smooth JPEGs (a gradient per class, blocky noise per image): small files, big decoded size;
    returns the decoded size in bytes."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    bases = [np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0 * x], 2), np.stack([y / HEIGHT, 0.3 + 0 * x, x / WIDTH], 2)]
    noise = rng.integers(0, 24, (HEIGHT // 50, WIDTH // 50, 3)).repeat(50, 0).repeat(50, 1)
    decoded = 0
    for k, base in enumerate(bases):
        os.makedirs(os.path.join(root, f"class{k}"))
        pixels = (base * (200 if k == 0 else 70)).astype(np.uint8)  # bright against dark
        for i in range(per_class):
            image = Image.fromarray(pixels + np.roll(noise, 50 * i, axis=1).astype(np.uint8))
            image.save(os.path.join(root, f"class{k}", f"{i:03d}.jpg"), quality=80)
            decoded += WIDTH * HEIGHT * 3
    return decoded


def train_and_evaluate(root, workers: int = 2, timeout: int = 300) -> dict:
    """One epoch and an evaluation over the folder in a fresh process; its peak memory and results."""
    env = dict(os.environ, PYTHONPATH=REPO, TORCHSLIM_WORKERS=str(workers), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-c", SCRIPT, root], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_folder_larger_than_memory_budget_trains_and_evaluates_in_bounded_memory(tmp_path):
    root = str(tmp_path / "photos")
    decoded = write_photos(root)
    assert decoded > 1.1e9
    result = train_and_evaluate(root)
    assert result["kind"] == "ImageFiles" and result["train"] == 160 and result["test"] == 40
    # every process stays far below the decoded size, and training grew the main one by little
    assert result["self_peak"] < decoded / 2, result
    assert result["worker_peak"] < decoded / 2, result
    assert result["self_peak"] - result["before"] < 250e6, result  # measured: about 120 MB, 50 or 200 photos
    assert result["epoch_top1"] >= 0.9  # the two gradients are told apart: real pixels were read
