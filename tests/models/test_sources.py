"""Model sources: zoo, torchvision, timm and the user's own code, and the extras they need."""

import os
import subprocess
import sys

import pytest
import torch

import torchslim
from tests.conftest import REPO
from torchslim import models
from torchslim.errors import UserError
from torchslim.models.sources import Source, parse_source, split_options


@pytest.mark.parametrize("text, expected", [
    ("vgg11", Source("zoo", "vgg11")),
    ("zoo:vgg11", Source("zoo", "vgg11")),
    ("torchvision:resnet18", Source("torchvision", "resnet18")),
    ("timm:resnet10t", Source("timm", "resnet10t")),
    ("mypkg.nets:build", Source("python", "mypkg.nets:build")),
])
def test_sources_parse(text, expected):
    assert parse_source(text) == expected


@pytest.mark.parametrize("text", ["", "timm:", "a b:c", "mypkg.nets:build.x", "pkg..x:y", ":x"])
def test_malformed_sources_are_user_errors(text):
    with pytest.raises(UserError):
        parse_source(text)


def test_options_follow_the_source_as_json():
    assert split_options('timm:resnet10t{"drop_rate": 0.5}') == ("timm:resnet10t", {"drop_rate": 0.5})
    with pytest.raises(UserError, match="JSON object"):
        split_options("timm:resnet10t{oops")


def test_a_zoo_source_is_the_zoo_model():
    torch.manual_seed(0)
    a = models.create("zoo:lenet5")
    torch.manual_seed(0)
    b = models.create("lenet5")
    assert a.torchslim_arch == b.torchslim_arch and a.torchslim_arch["name"] == "lenet5"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_torchvision_and_timm_sources_build_without_weights():
    model = models.create("torchvision:resnet18", num_classes=7, input_size=(64, 64))
    assert model.torchslim_arch == {"name": "torchvision:resnet18", "kwargs": {"num_classes": 7}}
    assert model.input_shape == (3, 64, 64) and model.fc.out_features == 7
    timm_model = models.create("timm:resnet10t", num_classes=5)
    assert timm_model.input_shape == tuple(timm_model.pretrained_cfg["input_size"])  # timm's own: 3x176x176
    assert timm_model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("source, option", [("torchvision:resnet18", {"weights": "DEFAULT"}),
                                            ("timm:resnet10t", {"pretrained": True})])
def test_nothing_is_downloaded(source, option):
    with pytest.raises(UserError, match="without pretrained weights"):
        models.create(source, **option)


def test_unknown_names_get_a_guess():
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        models.create("torchvision:resnet81")
    with pytest.raises(UserError, match="resnet10t"):
        models.create("timm:resnet10")


@pytest.mark.parametrize("source, extra", [("torchvision:resnet18", "torchslim[vision]"),
                                           ("timm:resnet10t", "torchslim[timm]")])
def test_a_missing_extra_is_named(source, extra):
    blocked = "torchvision" if extra == "torchslim[vision]" else "timm"
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from torchslim import models\n"
            "from torchslim.errors import UserError\n"
            f"try:\n    models.create({source!r})\nexcept UserError as exc:\n    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert extra in run.stdout, run.stdout + run.stderr


def test_torchvision_imports_in_a_fresh_process():
    """With PyPI's CUDA-linked wheel on CPU torch, the op schemas are declared and the models load."""
    code = ("from torchslim.models.sources import import_torchvision\n"
            "tv = import_torchvision()\n"
            "print(type(tv.models.mnasnet0_5()).__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 0 and run.stdout.strip() == "MNASNet", run.stderr


def test_a_wrapped_network_saves_and_loads(tmp_path):
    tv = models.sources.import_torchvision()
    torch.manual_seed(0)
    net = tv.models.squeezenet1_1(num_classes=4).eval()
    with pytest.raises(UserError, match="not built by torchslim"):
        torchslim.save(net, tmp_path / "x.safetensors")
    with pytest.raises(UserError, match="builds a ResNet"):
        models.wrap(net, source="torchvision:resnet18")
    models.wrap(net, source="torchvision:squeezenet1_1", kwargs={"num_classes": 4}, input_shape=(3, 64, 64))
    torchslim.save(net, tmp_path / "w.safetensors")
    loaded = torchslim.load(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert loaded.input_shape == (3, 64, 64)
    assert torch.equal(loaded(x), net(x))


def test_width_mult_is_the_zoos_alone():
    with pytest.raises(UserError, match="width-mult applies to zoo models"):
        models.create_for_data("torchvision:resnet18", num_classes=10, width_mult=0.5)
    with pytest.raises(UserError, match="3-channel"):
        models.create_for_data("torchvision:resnet18", num_classes=10, in_channels=1)
    assert models.create_for_data("timm:resnet10t", num_classes=3, in_channels=1).conv1[0].in_channels == 1
