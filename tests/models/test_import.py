"""``torchslim import``: weights from elsewhere, unwrapped and checked, and a file every verb takes."""

import json

import pytest
import torch
from safetensors.torch import save_file

import torchslim
from tests.conftest import needs_fashion_mnist, run_cli
from torchslim.errors import UserError
from torchslim.io.importer import ImportConfig, import_model
from torchslim.models.sources import import_torchvision


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def _resnet18_state(seed=1):
    torch.manual_seed(seed)
    return import_torchvision().models.resnet18().state_dict()


@pytest.mark.parametrize("wrapping", ["plain", "module", "model", "checkpoint", "safetensors"])
def test_weights_are_unwrapped_and_loaded_exactly(wrapping, tmp_path):
    state = _resnet18_state()
    path = tmp_path / ("w.safetensors" if wrapping == "safetensors" else "w.pth")
    if wrapping == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif wrapping == "checkpoint":
        torch.save({"epoch": 90, "optimizer": {"lr": 0.1}, "state_dict": {f"module.{k}": v for k, v in state.items()}},
                   path)
    else:
        prefix = "" if wrapping == "plain" else f"{wrapping}."
        torch.save({prefix + k: v for k, v in state.items()}, path)
    model, done = import_model(ImportConfig(source="torchvision:resnet18", weights=str(path)))
    assert done["tensors_loaded"] == len(state) and done["head_replaced"] == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_new_head_keeps_every_other_weight(tmp_path):
    state = _resnet18_state()
    torch.save(state, tmp_path / "w.pt")
    model, done = import_model(ImportConfig(source="torchvision:resnet18", weights=str(tmp_path / "w.pt"),
                                            num_classes=7, input_shape=(3, 32, 32)))
    assert done["head_replaced"] == ["fc.weight", "fc.bias"]
    assert model.fc.out_features == 7 and model.input_shape == (3, 32, 32)
    assert model.torchslim_arch == {"name": "torchvision:resnet18", "kwargs": {"num_classes": 7}}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_mismatched_keys_name_the_first_missing_and_unexpected(tmp_path):
    state = _resnet18_state()
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"first missing key 'layer1.0.conv1.weight' \(1 missing\); "
                                        r"first unexpected key 'extra.weight' \(1 unexpected\)"):
        import_model(ImportConfig(source="torchvision:resnet18", weights=str(tmp_path / "w.pt")))
    state = _resnet18_state()
    state["fc.weight"] = torch.zeros(3, 512)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"fc.weight is \(3, 512\) in the file, \(1000, 512\) in the model"):
        import_model(ImportConfig(source="torchvision:resnet18", weights=str(tmp_path / "w.pt")))


def test_a_pickled_module_is_refused_not_unpickled(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")  # a pickled class, not a state dict
    with pytest.raises(UserError, match="weights_only=True"):
        import_model(ImportConfig(source="torchvision:resnet18", weights=str(tmp_path / "whole.pt")))


def test_cli_errors_are_one_line(tmp_path):
    torch.save(_resnet18_state(), tmp_path / "w.pt")
    cases = [
        (["timm:resnet10t", "--weights", tmp_path / "w.pt"], "first missing key"),
        (["torchvision:resnet18", "--weights", tmp_path / "w.pt", "--out-of", "x"], "unrecognized arguments"),
        (["torchvision:resnet18", "--weights", tmp_path / "nope.pt"], "weights file not found"),
        (["torchvision:resnet18", "--options", "[1]"], "--options must be a JSON object"),
        (["torchvision:resnet18", "--input", "1x32x32"], "3-channel"),
    ]
    for extra, message in cases:
        proc = run_cli("import", *extra[:1], "--out", tmp_path / "o.safetensors", *extra[1:])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    proc = run_cli("import", "torchvision:resnet18", "--weights", tmp_path / "w.pt", "--out", tmp_path / "w.pt")
    assert proc.returncode == 2 and "is the --weights file" in proc.stderr
    assert not (tmp_path / "o.safetensors").exists()
    assert torch.load(tmp_path / "w.pt")["fc.weight"].shape == (1000, 512)  # the user's file untouched


@needs_fashion_mnist
def test_an_imported_model_goes_through_every_verb(tmp_path):
    state = _resnet18_state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    base = tmp_path / "base.safetensors"
    proc = run_cli("import", "torchvision:resnet18", "--weights", tmp_path / "w.pth", "--num-classes", "10",
                   "--input", "3x32x32", "--out", base, "--json")
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout)["num_classes"] == 10
    assert torchslim.load(base).conv1.weight.equal(state["conv1.weight"])
    data = ["--data", "fashion-mnist-32", "--subset", "100"]
    steps = {
        "eval": ["eval", base, *data],
        "profile": ["profile", base, "--batch-sizes", "1", "--repeats", "2"],
        "prune": ["prune", base, "--target-macs", "0.5", *data, "--out", tmp_path / "pruned.safetensors"],
        "quantize": ["quantize", tmp_path / "pruned.safetensors", "--method", "int8", *data, "--calib", "32",
                     "--out", tmp_path / "int8.onnx"],
        "export": ["export", tmp_path / "pruned.safetensors", "--format", "onnx", "--out", tmp_path / "f.onnx"],
    }
    results = {}
    for name, args in steps.items():
        proc = run_cli(*args, "--json")
        assert proc.returncode == 0, f"{name}: {proc.stderr[-1500:]}"
        results[name] = _last_json(proc.stdout)
    assert 0 <= results["eval"]["top1"] <= 1 and results["eval"]["n"] == 100
    assert results["profile"]["input_shape"] == [3, 32, 32]
    assert results["prune"]["macs_after"] <= 0.5 * results["prune"]["macs_before"] * 1.01
    assert results["quantize"]["size_bytes_packed"] < results["quantize"]["size_bytes_float"] / 3
    assert results["export"]["max_abs_diff"] < 1e-3


def test_weights_already_made_for_the_new_classes_keep_their_head(tmp_path):
    torch.manual_seed(2)
    state = import_torchvision().models.resnet18(num_classes=10).state_dict()
    torch.save(state, tmp_path / "w.pt")
    model, done = import_model(ImportConfig(source="torchvision:resnet18", weights=str(tmp_path / "w.pt"),
                                            num_classes=10))
    assert done["head_replaced"] == [] and torch.equal(model.fc.weight, state["fc.weight"])
    assert model.torchslim_arch["kwargs"] == {"num_classes": 10}
