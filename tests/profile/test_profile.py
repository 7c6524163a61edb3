import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.profile import compare_latency, count_macs, count_params, layer_table, profile_model


def test_vgg14_counts_match_the_paper_architecture():
    model = models.create("vgg14")
    assert count_params(model) == 9_414_090
    assert count_macs(model, (3, 32, 32)) == 242_417_664 + 5_120


def test_grouped_and_depthwise_conv_macs_are_exact():
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(depthwise, (8, 8, 8)) == 8 * 9 * 64
    grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
    assert count_macs(grouped, (8, 8, 8)) == 16 * (8 // 4) * 9 * 64
    strided = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    assert count_macs(strided, (3, 8, 8)) == 4 * 3 * 9 * 16


def test_per_layer_macs_add_up_to_the_total():
    model = models.create("resnet20")
    total, layers = count_macs(model, (3, 32, 32), per_layer=True)
    assert sum(layers.values()) == total
    rows = layer_table(model, (3, 32, 32))
    assert sum(r["params"] for r in rows) == count_params(model)
    assert sum(r["macs"] for r in rows) == total


def test_profile_size_matches_the_saved_file(tmp_path):
    model = models.create("lenet5")
    path = tmp_path / "m.safetensors"
    torchslim.save(model, path)
    from_file = profile_model(model, path=path, batch_sizes=(1,), repeats=3)
    in_memory = profile_model(model, batch_sizes=(1, 4), repeats=3)
    assert from_file.size_bytes == path.stat().st_size == in_memory.size_bytes
    assert in_memory.params == count_params(model)
    assert set(in_memory.batch_latency_ms) == {1, 4} and in_memory.latency_ms > 0
    # float32 weights dominate the file
    assert 4 * count_params(model) < in_memory.size_bytes < 4 * count_params(model) * 1.2 + 20_000


def test_compare_latency_reports_every_model_and_restores_threads():
    before = torch.get_num_threads()
    result = compare_latency({"a": nn.Linear(8, 8), "b": nn.Linear(8, 2)}, (8,), threads=1, repeats=5)
    assert result["threads"] == 1 and torch.get_num_threads() == before
    assert result["a"]["median_ms"] > 0 and result["b"]["p10_ms"] <= result["b"]["p90_ms"]


class _CallLog(nn.Module):
    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


@pytest.mark.parametrize("block, order", [
    (1, list("ab" * 4)),
    # a turn: one untimed call, then up to `block` timed ones; the last turn times what is left
    (3, list("aaaabbbbaabb")),
])
def test_compare_latency_interleaves_models_in_turns_of_a_block(block, order):
    log = []
    models = {"a": _CallLog("a", log), "b": _CallLog("b", log)}
    compare_latency(models, (2,), warmup=1, repeats=4, block=block)
    assert log[:2] == ["a", "b"]  # the warm-up
    assert log[2:] == order


def test_other_load_counts_a_process_that_spins_beside_ours():
    import subprocess
    import sys
    import time

    from torchslim.profile.hardware import OtherLoad

    spin = [sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"]
    child = subprocess.Popen(spin)
    try:
        time.sleep(0.2)  # the interpreter is up and spinning
        with OtherLoad() as load:
            time.sleep(0.8)  # the spinning process is not waited for inside the block: another job's load
    finally:
        child.wait()
    if load.cores is None:
        pytest.skip("no /proc/stat here")
    assert load.cores > 0.5 and load.busy
    assert "of" in load.describe() and "cores busy" in load.describe()
