"""torchvision and timm models: save, load in a fresh process, identical outputs; pruned timm layers too."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import torchslim
from tests.conftest import REPO
from torchslim import models

# A representative set by default (one per family that stores something unusual: mnasnet's
# state version, regnet's dashed module names, timm's BatchNormAct2d, ViT's class token).
FAST = ["torchvision:resnet18", "torchvision:mnasnet0_5", "torchvision:mobilenet_v3_small",
        "torchvision:efficientnet_b0", "torchvision:regnet_x_400mf", "torchvision:shufflenet_v2_x0_5",
        "torchvision:squeezenet1_1", "timm:resnet10t", "timm:efficientnet_b0", "timm:mobilenetv3_small_050",
        "timm:convnext_atto", 'timm:vit_tiny_patch16_224{"img_size": 64}']
SLOW = ["torchvision:convnext_tiny", "torchvision:swin_t", "torchvision:googlenet", "torchvision:densenet121",
        'torchvision:vit_b_16{"image_size": 64}', "timm:ghostnet_050", "timm:regnetx_002",
        'timm:deit_tiny_patch16_224{"img_size": 64}']
_LOAD_ALL = """
import json, sys, torch, torchslim
for job in json.load(open(sys.argv[1])):
    model = torchslim.load(job["file"])
    with torch.no_grad():
        torch.save(model(torch.load(job["io"])["x"]), job["out"])
"""
_RESULTS = {}


def _build(text):
    from torchslim.models.sources import split_options

    source, options = split_options(text)
    torch.manual_seed(0)
    model = models.create(source, num_classes=10, **options).eval()
    for module in model.modules():  # non-trivial running statistics, so a lost buffer shows
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


def _outputs(group, names, folder):
    """Save every model of ``group`` here, load them all in one fresh process; expected and loaded outputs."""
    if group not in _RESULTS:
        jobs, expected = [], {}
        for index, text in enumerate(names):
            model = _build(text)
            x = torch.randn(2, 3, 64, 64)
            with torch.no_grad():
                expected[text] = model(x)
            job = {key: str(folder / f"{index}.{key}") for key in ("file", "io", "out")}
            torchslim.save(model, job["file"])
            torch.save({"x": x}, job["io"])
            jobs.append(job)
        (folder / "jobs.json").write_text(json.dumps(jobs))
        run = subprocess.run([sys.executable, "-c", _LOAD_ALL, str(folder / "jobs.json")], capture_output=True,
                             text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
        assert run.returncode == 0, run.stderr[-2000:]
        _RESULTS[group] = {text: (expected[text], torch.load(job["out"])) for text, job in zip(names, jobs)}
    return _RESULTS[group]


@pytest.mark.parametrize("name", FAST)
def test_saved_models_load_bit_identical_in_a_fresh_process(name, tmp_path_factory):
    expected, loaded = _outputs("fast", FAST, tmp_path_factory.mktemp("fast"))[name]
    assert torch.equal(expected, loaded)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_more_saved_models_load_bit_identical_in_a_fresh_process(name, tmp_path_factory):
    expected, loaded = _outputs("slow", SLOW, tmp_path_factory.mktemp("slow"))[name]
    assert torch.equal(expected, loaded)


def test_a_pruned_timm_model_keeps_its_smaller_batchnormact(tmp_path):
    from torchslim.prune import PruneConfig, prune

    model = _build("timm:mobilenetv3_small_050")
    pruned = prune(model, PruneConfig(target_macs=0.5), example_inputs=torch.randn(1, 3, 64, 64)).model.eval()
    kind = type(model.bn1)
    assert kind.__name__ == "BatchNormAct2d" and kind is not nn.BatchNorm2d
    before = {n: m.num_features for n, m in model.named_modules() if type(m) is kind}
    after = {n: m.num_features for n, m in pruned.named_modules() if type(m) is kind}
    assert any(after[n] < before[n] for n in before)  # some really shrank
    torchslim.save(pruned, tmp_path / "p.safetensors")
    code = ("import sys, torch, torchslim\n"
            "m = torchslim.load(sys.argv[1])\n"
            "print({n: x.num_features for n, x in m.named_modules() if type(x).__name__ == 'BatchNormAct2d'})\n"
            "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])\n")
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.safetensors"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str(after)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), pruned(x))
