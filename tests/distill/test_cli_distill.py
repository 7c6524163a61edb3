import json

import pytest
import torch

import torchslim
from torchslim import models
from torchslim.cli.main import main
from tests.conftest import run_cli


def _save(path, num_classes=10, seed=0):
    torch.manual_seed(seed)
    model = models.create("lenet300", num_classes=num_classes, in_channels=1, input_size=(8, 8))
    torchslim.save(model, path)
    return path


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from torchslim.data import load_dataset
    from torchslim.train import TrainConfig, fit

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("distill") / "teacher.safetensors"
    torch.manual_seed(0)
    model = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))
    fit(model, load_dataset("digits", "train"),
        TrainConfig(epochs=5, batch_size=64, augment=False, schedule="cosine"), progress=False)
    torchslim.save(model, path)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "0"], "temperature must be > 0"),
    (["--temperature", "-2"], "temperature must be > 0"),
    (["--alpha", "1.5"], r"alpha .* must be in \[0, 1\]"),
    (["--alpha", "-0.1"], r"alpha .* must be in \[0, 1\]"),
    (["--loss", "hintn"], "did you mean 'hinton'"),
    (["--student", "mobilenet"], "unknown student model"),
    (["--data", "digits-32"], "expects input 1x8x8 but digits-32 gives 3x32x32"),
    (["--teacher-out", "t.safetensors"], "needs --online"),
])
def test_bad_input_is_one_line_and_leaves_no_file(teacher_file, tmp_path, capsys, extra, message):
    out = tmp_path / "student.safetensors"
    args = ["distill", "--teacher", str(teacher_file), "--student", "lenet300", "--data", "digits",
            "--epochs", "1", "--out", str(out)]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("torchslim: error: ") and "\n" not in err
    assert __import__("re").search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_teacher_with_other_class_count_is_refused(tmp_path, capsys):
    teacher = _save(tmp_path / "five.safetensors", num_classes=5)
    out = tmp_path / "student.safetensors"
    assert main(["distill", "--teacher", str(teacher), "--student", "lenet300", "--data", "digits",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "predicts 5 classes but digits has 10" in err and not out.exists()


def test_missing_teacher_file(tmp_path, capsys):
    assert main(["distill", "--teacher", str(tmp_path / "none.safetensors"), "--student", "lenet5",
                 "--data", "digits", "--out", str(tmp_path / "s.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_compare_json_contract(teacher_file, tmp_path):
    out = tmp_path / "student.safetensors"
    proc = run_cli("distill", "--teacher", teacher_file, "--student", "lenet300", "--width-mult", "0.5",
                   "--data", "digits", "--epochs", "4", "--batch-size", "64", "--no-augment", "--compare",
                   "--temperature", "2", "--alpha", "0.5", "--out", out, "--json", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("top1_student_alone", "top1_student_kd", "top1_teacher"):
        assert 0.0 <= result[key] <= 1.0
    assert result["top1_teacher"] >= 0.9 and result["top1_student_kd"] >= 0.85
    assert result["temperature"] == 2.0 and result["alpha"] == 0.5 and result["loss"] == "hinton"
    assert result["params_student"] < result["params_teacher"]
    student = torchslim.load(out)
    assert student.torchslim_arch["kwargs"]["width_mult"] == 0.5
    assert student.torchslim_meta["distill"]["temperature"] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]  # checkpoints removed


def test_online_trains_both_and_saves_the_teacher(tmp_path, capsys):
    out, teacher_out = tmp_path / "s.safetensors", tmp_path / "t.safetensors"
    assert main(["distill", "--online", "--teacher", "lenet300", "--student", "lenet300", "--width-mult", "0.25",
                 "--data", "digits", "--epochs", "3", "--batch-size", "64", "--no-augment", "--out", str(out),
                 "--teacher-out", str(teacher_out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["online"] is True and result["top1_teacher"] >= 0.85 and result["top1_student_kd"] >= 0.7
    assert torchslim.load(teacher_out).torchslim_arch["kwargs"]["width_mult"] == 1.0


@pytest.mark.parametrize("verb", [
    ["compress-weights", "--method", "kmeans", "--finetune-epochs", "1"],
    ["finetune", "--epochs", "1", "--batch-size", "16"],  # KDLoss refuses it at the first step
])
def test_teacher_with_other_class_count_is_one_line_and_leaves_no_file(tmp_path, verb):
    student, teacher = _save(tmp_path / "student.safetensors"), _save(tmp_path / "five.safetensors", num_classes=5)
    out = tmp_path / "out.safetensors"
    proc = run_cli(verb[0], student, *verb[1:], "--teacher", teacher, "--data", "digits", "--subset", "64",
                   "--out", out, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchslim: error:"), proc.stderr
    assert "predicts 5 classes but the student 10" in lines[0]
    if verb[0] == "compress-weights":  # checked up front, so the message names the file
        assert f"teacher {teacher} predicts" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.safetensors", "student.safetensors"]
