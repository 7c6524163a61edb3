"""Nothing the user owns is overwritten or deleted: every verb refuses an output that lands on an
input or on another output, an output folder holding someone else's files, and an output it could
not write -- before any work, with one line."""

import hashlib
import os
import shutil

import pytest

from tests.conftest import run_cli
from tests.hardening.conftest import assert_refused


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("verb_args", [
    ["prune", "{m}", "--ratio", "0.3", "--out", "{m}"],
    ["quantize", "{m}", "--method", "bwn", "--epochs", "0", "--data", "digits", "--out", "{m}"],
    ["compress-weights", "{m}", "--method", "kmeans", "--data", "digits", "--out", "{m}"],
    ["finetune", "{m}", "--data", "digits", "--out", "{m}"],
    ["export", "{m}", "--format", "packed", "--out", "{m}"],
    ["distill", "--teacher", "{m}", "--student", "lenet300", "--data", "digits", "--epochs", "1", "--out", "{m}"],
    ["finetune", "{copy}", "--teacher", "{m}", "--data", "digits", "--epochs", "1", "--out", "{m}"],
], ids=["prune", "quantize", "compress-weights", "finetune", "export", "distill-onto-teacher",
        "finetune-onto-teacher"])
def test_output_onto_an_input_is_refused_and_the_input_kept(verb_args, digits_model, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(digits_model, model)
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(digits_model, copy)
    before = _digest(model)
    proc = run_cli(*[a.format(m=model, copy=copy) for a in verb_args])
    assert_refused(proc, str(model), "overwritten")
    assert _digest(model) == before
    assert sorted(os.listdir(tmp_path)) == ["copy.safetensors", "model.safetensors"]


def test_output_onto_an_input_through_another_spelling_is_refused(digits_model, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(digits_model, model)
    os.symlink(model, tmp_path / "link.safetensors")
    before = _digest(model)
    proc = run_cli("prune", model, "--ratio", "0.3", "--out", tmp_path / "sub" / ".." / "link.safetensors")
    assert_refused(proc, "overwritten")
    assert _digest(model) == before


def test_packed_output_onto_the_model_output_is_refused(digits_model, tmp_path):
    out = tmp_path / "q.safetensors"
    proc = run_cli("quantize", digits_model, "--method", "bwn", "--epochs", "0", "--data", "digits",
                   "--out", out, "--packed", out)
    assert_refused(proc, "--packed", "--out", "two different files")
    assert not out.exists()


def test_compress_refuses_a_folder_holding_the_users_files(tiny_recipe, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (folder / "model.safetensors").write_text("my own model")
    proc = run_cli("compress", "--recipe", tiny_recipe, "--out", folder)
    assert_refused(proc, "notes.txt", "--force")
    assert sorted(os.listdir(folder)) == ["model.safetensors", "notes.txt"]
    assert (folder / "model.safetensors").read_text() == "my own model"


def test_compress_refuses_a_run_of_another_recipe_and_resumes_its_own(tiny_recipe, tmp_path):
    folder = tmp_path / "run"
    proc = run_cli("compress", "--recipe", tiny_recipe, "--out", folder, "--json")
    assert proc.returncode == 0, proc.stderr
    report = _digest(folder / "report.json")
    other = tmp_path / "other.yaml"
    other.write_text(tiny_recipe.read_text().replace("name: tiny", "name: other"))
    proc = run_cli("compress", "--recipe", other, "--out", folder)
    assert_refused(proc, "recipe tiny", "not other")
    assert _digest(folder / "report.json") == report
    proc = run_cli("compress", "--recipe", tiny_recipe, "--out", folder)  # its own run: resumed
    assert proc.returncode == 0, proc.stderr
    assert "reused" in proc.stdout


def test_compress_force_writes_the_run_and_leaves_the_users_files(tiny_recipe, tmp_path):
    folder = tmp_path / "mine"
    (folder / "stages").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (folder / "stages" / "my-data").write_text("keep me too")
    proc = run_cli("compress", "--recipe", tiny_recipe, "--out", folder, "--force")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "stages" / "my-data").read_text() == "keep me too"
    assert (folder / "model.packed").exists()


def _unwritable_cases(tmp):
    regular = tmp / "regular-file"
    regular.write_text("x")
    folder = tmp / "a-folder"
    folder.mkdir()
    return regular, folder


@pytest.mark.parametrize("case", [
    ("train", "/proc/torchslim-test.safetensors"),
    ("train", "{regular}/x.safetensors"),
    ("train", "{folder}"),
    ("quantize-packed", "/proc/torchslim-test.packed"),
    ("export", "{regular}/x.packed"),
    ("sensitivity-plot", "/proc/torchslim-test.png"),
    ("compress", "{regular}"),
    ("compress", "/proc/torchslim-test-run"),
    ("demo", "{regular}"),
], ids=lambda c: f"{c[0]}:{c[1].split('/')[-1]}")
def test_unwritable_output_is_refused_before_any_work(case, digits_model, tiny_recipe, tmp_path):
    verb, target = case
    regular, folder = _unwritable_cases(tmp_path)
    target = target.format(regular=regular, folder=folder)
    argv = {
        "train": ["train", "--model", "lenet300", "--data", "digits", "--epochs", "500", "--out", target],
        "quantize-packed": ["quantize", digits_model, "--method", "bwn", "--epochs", "50", "--data", "digits",
                            "--out", tmp_path / "q.safetensors", "--packed", target],
        "export": ["export", digits_model, "--format", "packed", "--out", target],
        "sensitivity-plot": ["sensitivity", digits_model, "--data", "digits", "--plot", target],
        "compress": ["compress", "--recipe", tiny_recipe, "--out", target],
        "demo": ["demo", "--quick", "--out", target],
    }[verb]
    proc = run_cli(*argv, timeout=120)
    assert_refused(proc, target)
    assert sorted(os.listdir(tmp_path)) == ["a-folder", "regular-file"]
    assert regular.read_text() == "x" and os.listdir(folder) == []
