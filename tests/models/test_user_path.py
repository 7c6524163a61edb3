"""A torchvision model and a folder of 64x64 images through the verbs that earlier tests do not cover:
import shaped by the data, finetune, distill (source and file students, a source teacher), compress-weights,
bench, and recipes that start from a source."""

import json
import os

import numpy as np
import pytest
import torch

import torchslim
from tests.conftest import run_cli
from torchslim.pipeline import load_recipe, plan

CLASSES, PER_CLASS = 4, 3


def _last_json(proc):
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_folder(root) -> str:
    """root/{train,test}/c<k>/*.png: noisy 72x80 images whose mean colour tells the class apart."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(CLASSES):
            os.makedirs(root / split / f"c{k}", exist_ok=True)
            for i in range(PER_CLASS):
                pixels = rng.integers(0, 60, (72, 80, 3)) + np.array([60 * k, 200 - 50 * k, 90])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / split / f"c{k}" / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """torchvision:resnet18 imported for the folder (its 4 classes, 3x64x64 from --image-size)."""
    tmp = tmp_path_factory.mktemp("userpath")
    data = _write_folder(tmp / "images")
    base = tmp / "base.safetensors"
    result = _last_json(run_cli("import", "torchvision:resnet18", "--data", data, "--image-size", "64",
                                "--out", base, "--json"))
    return tmp, data, base, result


def test_import_takes_classes_and_input_from_the_data(imported):
    _, _, base, result = imported
    assert result["num_classes"] == CLASSES and result["input_shape"] == [3, 64, 64]
    assert result["head_replaced"] == ["fc.weight", "fc.bias"]
    model = torchslim.load(base)
    assert model.fc.out_features == CLASSES and tuple(model.input_shape) == (3, 64, 64)
    assert model.torchslim_arch["name"] == "torchvision:resnet18"


def test_finetune_changes_the_weights_not_the_shape(imported):
    tmp, data, base, _ = imported
    out = tmp / "finetuned.safetensors"
    result = _last_json(run_cli("finetune", base, "--data", data, "--epochs", "1", "--batch-size", "4",
                                "--lr", "0.01", "--out", out, "--json"))
    assert 0 <= result["top1_after"] <= 1 and result["epochs"] == 1
    before, after = torchslim.load(base), torchslim.load(out)
    assert after.fc.out_features == CLASSES and tuple(after.input_shape) == (3, 64, 64)
    assert not torch.equal(before.conv1.weight, after.conv1.weight)
    assert {k: v.shape for k, v in before.state_dict().items()} == {k: v.shape for k, v in after.state_dict().items()}


def test_distill_into_a_torchvision_student_and_into_a_saved_file(imported):
    tmp, data, base, _ = imported
    common = ["--teacher", base, "--data", data, "--epochs", "1", "--batch-size", "4", "--json"]
    student = _last_json(run_cli("distill", "--student", "torchvision:mobilenet_v3_small", *common,
                                 "--out", tmp / "student.safetensors"))
    model = torchslim.load(tmp / "student.safetensors")
    assert model.torchslim_arch["name"] == "torchvision:mobilenet_v3_small"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, CLASSES)
    assert student["params_student"] == sum(p.numel() for p in model.parameters())
    # a saved model as the student: trained further with the teacher, keeping its own architecture
    thin = tmp / "thin.safetensors"
    _last_json(run_cli("prune", base, "--ratio", "0.5", "--data", data, "--out", thin, "--json"))
    result = _last_json(run_cli("distill", "--student", thin, *common, "--out", tmp / "thin-kd.safetensors"))
    pruned, trained = torchslim.load(thin), torchslim.load(tmp / "thin-kd.safetensors")
    assert result["params_student"] == sum(p.numel() for p in pruned.parameters())
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    assert not torch.equal(pruned.conv1.weight, trained.conv1.weight)


def test_distill_online_with_a_source_teacher_and_bad_students(imported):
    tmp, data, _, _ = imported
    out = tmp / "online.safetensors"
    result = _last_json(run_cli("distill", "--online", "--teacher", "torchvision:squeezenet1_1",
                                "--teacher-out", tmp / "t.safetensors", "--student", "shallow2", "--data", data,
                                "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--out", out, "--json"))
    assert torchslim.load(tmp / "t.safetensors").torchslim_arch["name"] == "torchvision:squeezenet1_1"
    assert 0 <= result["top1_teacher"] <= 1
    proc = run_cli("distill", "--teacher", tmp / "t.safetensors", "--student", "no-such-net", "--data", data,
                   "--out", tmp / "x.safetensors")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "mobilenetv2" in proc.stderr, proc.stderr
    assert not (tmp / "x.safetensors").exists()


def test_compress_weights_quantize_and_bench_take_the_imported_file(imported):
    tmp, data, base, _ = imported
    out = tmp / "sparse.safetensors"
    result = _last_json(run_cli("compress-weights", base, "--method", "magnitude", "--sparsity", "0.5",
                                "--data", data, "--out", out, "--json"))
    model = torchslim.load(out)
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert 0.45 <= (weights == 0).float().mean().item() <= 0.55, result
    binary = tmp / "xnor.safetensors"
    _last_json(run_cli("quantize", base, "--method", "xnor", "--epochs", "0", "--data", data, "--out", binary,
                       "--json"))
    bench = _last_json(run_cli("bench", binary, "--repeats", "2", "--no-layers", "--openvino", "off", "--json"))
    run, = bench["runs"]
    assert run["batch"] == 1 and min(run["float_eager_ms"], run["binary_ms"], run["int8_ort_ms"]) > 0, run
    assert bench["memory"]["binary_layers"] == 19  # every conv but the first, and no classifier: keep_first_last


RECIPE = """\
name: from-source
data: {data}
stages:
  - load: {{source: torchvision:resnet18}}
  - prune: {{criterion: l1, target_macs: 0.5}}
"""


@pytest.mark.slow  # a whole compress run: stages, measurements and the report
def test_a_recipe_load_stage_imports_a_source(imported):
    tmp, data, _, _ = imported
    recipe = tmp / "from-source.yaml"
    recipe.write_text(RECIPE.format(data=data))
    stages = plan(load_recipe(str(recipe)))
    assert stages[0].verb == "import" and stages[0].argv == ["torchvision:resnet18"]
    out = tmp / "run"
    report = _last_json(run_cli("compress", "--recipe", recipe, "--out", out, "--json"))
    first, final = report["stages"][0], torchslim.load(out / "model.safetensors")
    assert first["command"].startswith("torchslim import torchvision:resnet18 --data " + data)
    assert report["stages"][1]["macs"] <= 0.5 * first["macs"] * 1.01
    assert final.fc.out_features == CLASSES and final.torchslim_arch["name"] == "torchvision:resnet18"


def test_compress_model_takes_a_source(imported, tmp_path):
    _, data, _, _ = imported
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=data).replace("source: torchvision:resnet18", "file: nowhere.safetensors"))
    check = _last_json(run_cli("compress", "--recipe", recipe, "--model", "torchvision:squeezenet1_1", "--check",
                               "--json"))
    assert check["valid"] and check["stages"] == ["load", "prune"]
    stages = plan(load_recipe(str(recipe)), model="torchvision:squeezenet1_1")
    assert stages[0].argv == ["torchvision:squeezenet1_1"]
    trained = tmp_path / "t.yaml"
    trained.write_text(f"name: t\ndata: {data}\nstages:\n  - train: {{model: vgg14, width_mult: 0.25, epochs: 1}}\n")
    stages = plan(load_recipe(str(trained)), model="torchvision:squeezenet1_1")
    assert stages[0].name == "train" and stages[0].argv[:2] == ["--model", "torchvision:squeezenet1_1"]
    assert "--width-mult" not in stages[0].argv
    for model, message in [("nowhere.safetensors", "file not found"), ("not a source:x y", "file not found")]:
        proc = run_cli("compress", "--recipe", recipe, "--model", model, "--check")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
