"""Two gloo processes under torchrun split a streamed folder disjointly, and train on it in step."""

import json
import os
import subprocess
import sys

import torch

from tests.conftest import REPO
from torchslim.data import load_dataset

from .data_testfiles import write_id_folder

# Each rank reads its shard as fit does (decoding the files in worker processes), names the samples it saw
# by their pixel colour, then trains one epoch of DDP on the folder.
WORKER = r"""
import json, os, sys, torch
from torch import nn
from torchslim.data import BatchLoader, load_dataset
from torchslim.train import TrainConfig, fit, init_from_env
from torchslim.train.distributed import current, shutdown

info = init_from_env("cpu")
assert current().world_size == 2
train = load_dataset("folder", "train", root=sys.argv[1], image_size=64, stream=True)
loader = BatchLoader(train, batch_size=5, shuffle=True, augment=True, seed=7, rank=info.rank,
                     world_size=info.world_size, workers=2)
seen = {}
for epoch in (0, 1):
    loader.set_epoch(epoch)
    ids = []
    for x, _ in loader:
        mean, std = torch.tensor(train.mean).view(1, 3, 1, 1), torch.tensor(train.std).view(1, 3, 1, 1)
        pixels = torch.round((x * std + mean) * 255)[:, :, 32, 32]
        ids += [int(r) + 256 * int(g) for r, g, _ in pixels.tolist()]
    seen[epoch] = ids
torch.manual_seed(10 + info.rank)  # different starting weights: DDP must make them equal
model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
fit(model, train, TrainConfig(epochs=1, batch_size=4, lr=0.01, seed=3), progress=False)
torch.save(model.state_dict(), os.path.join(sys.argv[2], f"model{info.rank}.pt"))
with open(os.path.join(sys.argv[2], f"rank{info.rank}.json"), "w") as handle:
    json.dump({"seen": seen, "indices": loader.indices().tolist()}, handle)
shutdown()
"""


def test_two_ranks_read_disjoint_shards_and_train_in_step(tmp_path):
    root = tmp_path / "ids"
    write_id_folder(root, classes=2, per_class=15, size=(80, 70))  # 24 train, 6 test after the 80/20 split
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(root), str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    test = load_dataset("folder", "test", root=str(root), image_size=64, stream=True)
    test_ids = {int(os.path.basename(path)[:4]) for path in test.paths}
    train_ids = [i for i in range(30) if i not in test_ids]
    for epoch in ("0", "1"):
        shard0, shard1 = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(shard0) == len(shard1) == 12  # 24 training images: 5 + 5 + 2 on each rank
        assert not set(shard0) & set(shard1)
        assert sorted(shard0 + shard1) == train_ids
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # a new order each epoch
    model0, model1 = (torch.load(tmp_path / f"model{r}.pt") for r in (0, 1))
    assert all(torch.equal(model0[k], model1[k]) for k in model0)

