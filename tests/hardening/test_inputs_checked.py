"""Every input checked before the work, with one line: the model against the data (classes and
shape) in every verb, splits with no images, numbers out of range, recipes at planning time, and
Ctrl-C while torch is still importing.  Stale temporary files of our own go on resume."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli
from tests.hardening.conftest import assert_refused, write_folder

# every verb that reads a model and a data set: {m} the model, {d} the data, {o} an output
MODEL_ON_DATA = {
    "eval": ["eval", "{m}", "--data", "{d}"],
    "eval-packed": ["eval", "{p}", "--data", "{d}"],
    "finetune": ["finetune", "{m}", "--data", "{d}", "--epochs", "1", "--out", "{o}"],
    "prune": ["prune", "{m}", "--ratio", "0.3", "--data", "{d}", "--out", "{o}"],
    "quantize": ["quantize", "{m}", "--method", "bwn", "--epochs", "1", "--data", "{d}", "--out", "{o}"],
    "compress-weights": ["compress-weights", "{m}", "--method", "kmeans", "--data", "{d}", "--out", "{o}"],
    "sensitivity": ["sensitivity", "{m}", "--data", "{d}"],
    "distill": ["distill", "--teacher", "{m}", "--student", "lenet5", "--data", "{d}", "--epochs", "1",
                "--out", "{o}"],
}


def _compress_case(model, data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndata: {data}\nstages:\n  - load: {{}}\n  - prune: {{criterion: l1, ratio: 0.3}}\n")
    return ["compress", "--recipe", recipe, "--model", model, "--out", tmp_path / "run"]


@pytest.mark.parametrize("verb", [*MODEL_ON_DATA, "compress"])
def test_a_model_of_other_classes_than_the_data_is_refused_first(verb, rgb_model, three_classes, tmp_path):
    model, packed = rgb_model
    out = tmp_path / "out.safetensors"
    argv = _compress_case(model, three_classes, tmp_path) if verb == "compress" else \
        [a.format(m=model, p=packed, d=three_classes, o=out) for a in MODEL_ON_DATA[verb]]
    proc = run_cli(*argv)
    assert_refused(proc, "10 classes", "3")
    assert not out.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("verb", [*MODEL_ON_DATA, "compress"])
def test_a_model_of_another_input_shape_is_refused_naming_both(verb, rgb_model, tmp_path):
    model, packed = rgb_model
    out = tmp_path / "out.safetensors"
    argv = _compress_case(model, "digits", tmp_path) if verb == "compress" else \
        [a.format(m=model, p=packed, d="digits", o=out) for a in MODEL_ON_DATA[verb]]
    proc = run_cli(*argv)
    line = assert_refused(proc)
    assert "3x32x32" in line and "1x8x8" in line
    assert not out.exists() and not (tmp_path / "run").exists()


def test_a_three_channel_model_on_one_channel_images_names_the_32_variants(rgb_model, tmp_path):
    model, _ = rgb_model
    proc = run_cli("eval", model, "--data", "digits")
    assert_refused(proc, "3x32x32", "1x8x8", "-32")


def test_a_folder_too_small_for_a_test_split_is_refused(digits_model, tmp_path):
    data = "folder:" + write_folder(tmp_path / "two", classes=3, per_class=2)
    proc = run_cli("train", "--model", "lenet5", "--data", data, "--epochs", "1", "--out", tmp_path / "m.safetensors")
    assert_refused(proc, "has 2 images", "at least 3 per class")
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("argv, words", [
    (["train", "--model", "lenet300", "--data", "digits", "--seed", str(2**70), "--out", "{o}"], ["--seed"]),
    (["prune", "{m}", "--ratio", "0.3", "--seed", str(2**70), "--out", "{o}"], ["--seed"]),
    (["quantize", "{m}", "--method", "bwn", "--data", "digits", "--seed", "-1", "--out", "{o}"], ["--seed"]),
    (["compress-weights", "{m}", "--method", "kmeans", "--data", "digits", "--seed", str(2**64), "--out", "{o}"],
     ["--seed"]),
    (["profile", "{m}", "--repeats", "0"], ["--repeats"]),
    (["profile", "{m}", "--threads", "-3"], ["--threads"]),
    (["prune", "{m}", "--ratio", "0.3", "--threads", "0", "--out", "{o}"], ["--threads"]),
    (["train", "--model", "vgg14", "--data", "digits-32", "--width-mult", "1e4", "--out", "{o}"],
     ["--width-mult"]),
    (["train", "--model", "vgg14", "--data", "digits-32", "--width-mult", "nan", "--out", "{o}"], ["--width-mult"]),
    (["profile", "--model", "vgg16", "--width-mult", "64"], ["GiB", "--width-mult"]),
    (["train", "--model", "vgg16", "--data", "digits-32", "--width-mult", "64", "--out", "{o}"], ["GiB"]),
    (["eval", "{m}", "--data", "digits", "--batch-size", "0"], ["--batch-size"]),
    (["train", "--model", "lenet300", "--data", "digits", "--subset", "0", "--out", "{o}"], ["--subset"]),
], ids=["train-seed-2**70", "prune-seed", "quantize-seed-negative", "compress-weights-seed", "profile-repeats-0",
        "profile-threads-negative", "prune-threads-0", "train-width-1e4", "train-width-nan",
        "profile-width-memory", "train-width-memory", "eval-batch-0", "train-subset-0"])
def test_numbers_out_of_range_are_refused(argv, words, digits_model, tmp_path):
    out = tmp_path / "out.safetensors"
    proc = run_cli(*[str(a).format(m=digits_model, o=out) for a in argv], timeout=120)
    assert_refused(proc, *words)
    assert os.listdir(tmp_path) == []


RECIPES = {
    "export-before-prune": ("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n"
                            "  - export: {format: packed}\n  - prune: {criterion: l1, ratio: 0.3}\n",
                            ["stage 3 (prune)", "export"]),
    "quantize-int8": ("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n"
                      "  - quantize: {method: int8}\n", ["int8", "bwn"]),
    "unknown-data": ("data: nosuchdata\nstages:\n  - train: {model: lenet300, epochs: 1}\n", ["nosuchdata"]),
    "empty-folder": ("data: folder:{empty}\nstages:\n  - train: {model: lenet5, epochs: 1}\n", ["no images"]),
    "train-shape": ("data: digits\nstages:\n  - train: {model: vgg14, epochs: 1}\n", ["vgg14", "1x8x8"]),
    "train-width": ("data: digits-32\nstages:\n  - train: {model: vgg16, width_mult: 60, epochs: 1}\n", ["GiB"]),
    "seed-range": ("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1, seed: 1180591620717411303424}\n",
                   ["seed"]),
}


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_that_cannot_run_is_refused_before_the_folder_is_touched(name, tmp_path):
    text, words = RECIPES[name]
    (tmp_path / "empty" / "a").mkdir(parents=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text.replace("{empty}", str(tmp_path / "empty")))
    began = time.perf_counter()
    proc = run_cli("compress", "--recipe", recipe, "--out", tmp_path / "run", timeout=300)
    assert_refused(proc, *words)
    assert not (tmp_path / "run").exists()  # no folder, no run/.lock
    assert time.perf_counter() - began < 120  # refused at planning, not after the stages


def test_a_recipe_started_from_a_file_that_is_no_model_names_the_users_file(tiny_recipe, tmp_path):
    model = tmp_path / "base.onnx"
    model.write_bytes(b"\x08\x07not a torchslim model")
    proc = run_cli("compress", "--recipe", tiny_recipe, "--model", model, "--out", tmp_path / "run")
    line = assert_refused(proc, str(model))
    assert "stages" not in line and not (tmp_path / "run").exists()


def _loading_torch(pid: int) -> bool:
    """True once torch's shared libraries are mapped into the process: its import has begun."""
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return "torch/lib" in handle.read()
    except OSError:
        return False


# A signal that lands mid-way through a C extension's import (torch, numpy) can make that import print
# its own trace; those moments race the machine's load, so they run with the slow tests.
@pytest.mark.parametrize("moment", ["torch-import-begun",
                                    pytest.param("torch-import-plus-0.2s", marks=pytest.mark.slow),
                                    pytest.param("torch-import-plus-0.5s", marks=pytest.mark.slow)])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(moment, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([sys.executable, "-m", "torchslim", "train", "--model", "lenet300", "--data",
                                "digits", "--epochs", "200", "--out", str(tmp_path / "m.safetensors")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 60
    while not _loading_torch(process.pid) and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    time.sleep({"torch-import-begun": 0.0, "torch-import-plus-0.2s": 0.2, "torch-import-plus-0.5s": 0.5}[moment])
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines() == ["torchslim: interrupted"]


def test_stale_temporaries_of_a_killed_run_are_removed_on_resume(tiny_recipe, tmp_path):
    folder = tmp_path / "run"
    assert run_cli("compress", "--recipe", tiny_recipe, "--out", folder).returncode == 0
    stale = [folder / ".tmp-model.onnx.k1ll3d00", folder / ".tmp-report.json.abcd_123"]
    for path in stale:
        path.write_bytes(b"half")
    (folder / "stages" / "02-prune" / ".tmp-model.safetensors.zz9y8x7w").write_bytes(b"half")
    proc = run_cli("compress", "--recipe", tiny_recipe, "--out", folder)
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in stale)
    assert not (folder / "stages" / "02-prune" / ".tmp-model.safetensors.zz9y8x7w").exists()


def test_stale_temporaries_beside_a_trained_model_are_removed_but_nothing_else(tmp_path):
    out = tmp_path / "m.safetensors"
    ours = [tmp_path / ".tmp-m.safetensors.a1b2c3d4", tmp_path / ".tmp-m.safetensors.ckpt.q9w8e7r6"]
    theirs = [tmp_path / ".tmp-other.safetensors.a1b2c3d4", tmp_path / "m.safetensors.notes"]
    for path in ours + theirs:
        path.write_bytes(b"x")
    proc = run_cli("train", "--model", "lenet300", "--data", "digits", "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in ours) and all(p.read_bytes() == b"x" for p in theirs)
