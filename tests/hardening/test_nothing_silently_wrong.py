"""Nothing silently wrong: a checkpoint of another run is never resumed, training never runs zero
steps, and an option that matches nothing or does not apply is an error naming the valid choices."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli
from tests.hardening.conftest import assert_refused, last_json

TRAIN = ["train", "--model", "lenet300", "--data", "digits", "--batch-size", "4", "--no-augment"]


def _killed_after_first_epoch(out, *extra):
    """Start ``train`` and kill -9 it as soon as its first checkpoint exists; returns the checkpoint."""
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([sys.executable, "-m", "torchslim", *TRAIN, "--epochs", "40", *extra, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    checkpoint = str(out) + ".ckpt"
    deadline = time.time() + 300
    while not os.path.exists(checkpoint) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert os.path.exists(checkpoint), "the first epoch never finished"
    return checkpoint


@pytest.fixture(scope="module")
def stale_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("stale") / "model.safetensors"
    checkpoint = _killed_after_first_epoch(out)
    return out, open(checkpoint, "rb").read()


@pytest.mark.parametrize("change", [
    ["--subset", "500"], ["--data", "digits-32"], ["--model", "shallow2"], ["--width-mult", "0.5"],
    ["--seed", "3"], ["--lr", "0.01"], ["--batch-size", "8"],
], ids=["subset", "data", "model", "width", "seed", "lr", "batch-size"])
def test_a_checkpoint_of_another_run_is_refused_not_resumed(change, stale_checkpoint, tmp_path):
    template, content = stale_checkpoint
    out = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.ckpt").write_bytes(content)
    argv = TRAIN + ["--epochs", "40", "--out", out]
    for flag, value in zip(change[::2], change[1::2]):  # replace the flag, or add it
        argv = argv[:argv.index(flag) + 1] + [value] + argv[argv.index(flag) + 2:] if flag in argv \
            else argv + [flag, value]
    proc = run_cli(*argv)
    assert_refused(proc, "model.safetensors.ckpt", "delete it", "another --out")
    assert not out.exists()
    assert (tmp_path / "model.safetensors.ckpt").read_bytes() == content


def test_a_checkpoint_of_the_same_run_resumes(tmp_path):
    out = tmp_path / "model.safetensors"
    _killed_after_first_epoch(out, "--subset", "200")
    proc = run_cli(*TRAIN, "--epochs", "40", "--subset", "200", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    history = last_json(proc.stdout)["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41)) and not os.path.exists(str(out) + ".ckpt")


@pytest.mark.parametrize("argv, words", [
    (["train", "--model", "lenet300", "--data", "digits", "--subset", "512", "--batch-size", "1024"],
     ["has 512 images", "fewer than one batch of 1024"]),
    (["train", "--model", "lenet300", "--data", "digits", "--subset", "10", "--batch-size", str(10**20)],
     ["has 10 images", "fewer than one batch"]),
], ids=["batch-1024-subset-512", "batch-1e20"])
def test_a_batch_larger_than_the_data_never_trains_zero_steps(argv, words, tmp_path):
    out = tmp_path / "model.safetensors"
    proc = run_cli(*argv, "--epochs", "1", "--out", out)
    assert_refused(proc, *words)
    assert os.listdir(tmp_path) == []


def test_a_recipe_batch_larger_than_the_data_fails_its_stage(tmp_path):
    recipe = tmp_path / "big.yaml"
    recipe.write_text("name: big\ndata: digits\nstages:\n  - train: {model: lenet300, epochs: 1, subset: 64, "
                      f"batch_size: {10**20}}}\n")
    proc = run_cli("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "has 64 images, fewer than one batch" in proc.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("argv, words", [
    (["prune", "{m}", "--ratio", "0.3", "--ignore", "nosuch.layer", "--out", "{o}"],
     ["--ignore 'nosuch.layer'", "classifier.0"]),
    (["export", "{m}", "--format", "onnx", "--huffman", "--out", "{o}"], ["--huffman", "packed"]),
    (["export", "{m}", "--format", "onnx", "--dense", "--out", "{o}"], ["--dense", "packed"]),
    (["export", "{m}", "--format", "onnx", "--side-dtype", "int8", "--out", "{o}"], ["--side-dtype", "packed"]),
    (["export", "{m}", "--format", "packed", "--opset", "13", "--out", "{o}"], ["--opset", "onnx"]),
    (["export", "{m}", "--format", "packed", "--input", "1x8x8", "--out", "{o}"], ["--input", "onnx"]),
    (["train", "--model", "lenet300", "--data", "digits", "--weight-decay", "-1", "--out", "{o}"],
     ["--weight-decay", "[0, inf)"]),
    (["finetune", "{m}", "--data", "digits", "--weight-decay", "-1", "--out", "{o}"], ["--weight-decay"]),
    (["distill", "--teacher", "{m}", "--student", "lenet300", "--data", "digits", "--weight-decay", "-1",
      "--out", "{o}"], ["--weight-decay"]),
    (["train", "--model", "lenet300", "--data", "digits", "--lr", "0", "--out", "{o}"], ["--lr"]),
], ids=["prune-ignore-nothing", "onnx-huffman", "onnx-dense", "onnx-side-dtype", "packed-opset", "packed-input",
        "train-weight-decay", "finetune-weight-decay", "distill-weight-decay", "train-lr-0"])
def test_an_option_that_does_nothing_is_an_error(argv, words, digits_model, tmp_path):
    out = tmp_path / "out.file"
    proc = run_cli(*[str(a).format(m=digits_model, o=out) for a in argv])
    assert_refused(proc, *words)
    assert os.listdir(tmp_path) == []


def test_a_recipe_option_that_does_nothing_is_refused_at_planning(tmp_path):
    recipe = tmp_path / "onnx.yaml"
    recipe.write_text("name: onnx\ndata: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n"
                      "  - export: {format: onnx, huffman: true}\n")
    proc = run_cli("compress", "--recipe", recipe, "--check")
    assert_refused(proc, "onnx.yaml:5", "huffman")
