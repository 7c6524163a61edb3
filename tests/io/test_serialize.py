import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.io import atomic_write_bytes
from tests.conftest import REPO


def _randomize_bn(model):
    # Non-trivial running stats, so a load that forgets buffers is caught.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("name", models.list_models())
def test_round_trip_every_model_is_bit_identical(name, tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(models.create(name, num_classes=7)).eval()
    x = torch.randn(2, *model.input_shape)
    path = tmp_path / "m.safetensors"
    torchslim.save(model, path, note="hello")
    loaded = torchslim.load(path)
    assert torch.equal(model(x), loaded(x))
    assert loaded.input_shape == model.input_shape
    assert loaded.torchslim_meta["note"] == "hello"
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_round_trip_in_a_fresh_process(tmp_path):
    script = (
        "import torch, torchslim\n"
        "from torchslim import models\n"
        "torch.manual_seed(3)\n"
        "m = models.create('resnet20', num_classes=10).eval()\n"
        "for mod in m.modules():\n"
        "    if isinstance(mod, torch.nn.BatchNorm2d): mod.running_mean.normal_()\n"
        f"x = torch.randn(4, 3, 32, 32)\n"
        f"torchslim.save(m, r'{tmp_path}/m.safetensors')\n"
        f"torch.save({{'x': x, 'y': m(x).detach()}}, r'{tmp_path}/io.pt')\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO)
    expected = torch.load(tmp_path / "io.pt")
    loaded = torchslim.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded(expected["x"]), expected["y"])


def test_reshaped_and_replaced_layers_round_trip(tmp_path):
    """What pruning and factorisation produce: smaller convs and a Linear split in two."""
    torch.manual_seed(0)
    model = models.create("vgg11", width_mult=0.25).eval()
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    (name0, conv0), (name1, conv1) = convs[0], convs[1]
    bn0_name = next(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    keep = torch.arange(0, conv0.out_channels, 2)
    new0 = nn.Conv2d(conv0.in_channels, len(keep), 3, padding=1, bias=False)
    new0.weight.data = conv0.weight.data[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep))
    new1 = nn.Conv2d(len(keep), conv1.out_channels, 3, padding=1, bias=False)
    new1.weight.data = conv1.weight.data[:, keep].clone()
    for path, module in ((name0, new0), (bn0_name, new_bn), (name1, new1)):
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
    linear_name, linear = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear))
    factor = nn.Sequential(nn.Linear(linear.in_features, 4, bias=False), nn.Linear(4, linear.out_features))
    parent, _, child = linear_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, factor)
    model.eval()
    x = torch.randn(3, *model.input_shape)
    torchslim.save(model, tmp_path / "p.safetensors")
    loaded = torchslim.load(tmp_path / "p.safetensors")
    assert loaded.get_submodule(name0).out_channels == len(keep)
    assert isinstance(loaded.get_submodule(linear_name), nn.Sequential)
    assert torch.equal(model(x), loaded(x))


def test_missing_corrupt_and_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        torchslim.load(tmp_path / "nope.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a torchslim model"):
        torchslim.load(tmp_path / "junk.bin")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="not a torchslim model"):
        torchslim.load(tmp_path / "plain.safetensors")
    good = tmp_path / "good.safetensors"
    torchslim.save(models.create("lenet300"), good)
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError):
        torchslim.load(tmp_path / "cut.safetensors")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"abc")
    assert os.listdir(tmp_path) == []


def test_saving_a_foreign_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="register"):
        torchslim.save(nn.Linear(2, 2), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_saved_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def test_the_same_model_gives_the_same_bytes_in_every_process(tmp_path):
    """Metadata order is fixed on write: the safetensors writer's hash-map order changes per process."""
    script = ("import sys, torch, torchslim; from torchslim import models; torch.manual_seed(0); "
              "torchslim.save(models.create('lenet5', num_classes=10), sys.argv[1])")
    paths = [tmp_path / f"m{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=REPO)
    first = paths[0].read_bytes()
    assert all(path.read_bytes() == first for path in paths[1:])
    torchslim.load(paths[0])  # and the reordered header still passes its checksum
