"""Shared material for the hardening tests: small trained models, odd image folders, and the
assertion that a refusal kept every promise (one line, exit 2, no traceback, nothing left behind)."""

import json
import os

import numpy as np
import pytest

from tests.conftest import run_cli


def write_folder(root, classes: int, per_class: int, size: int = 32, seed: int = 0):
    """An image folder DIR/<class>/<i>.png of random RGB images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, f"class{c}", f"{i}.png"))
    return str(root)


def assert_refused(proc, *words):
    """Exit 2, one ``torchslim: error:`` line on stderr that holds every word, and no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("torchslim: error:"), proc.stderr[-2000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """lenet300 on digits (1x8x8, 10 classes), one epoch."""
    out = tmp_path_factory.mktemp("digits") / "lenet300.safetensors"
    proc = run_cli("train", "--model", "lenet300", "--data", "digits", "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def rgb_model(tmp_path_factory):
    """lenet5 on digits-32 (3x32x32, 10 classes), one epoch, and its packed file."""
    folder = tmp_path_factory.mktemp("rgb")
    out = folder / "lenet5.safetensors"
    proc = run_cli("train", "--model", "lenet5", "--data", "digits-32", "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    packed = folder / "lenet5.packed"
    proc = run_cli("export", out, "--format", "packed", "--out", packed)
    assert proc.returncode == 0, proc.stderr
    return out, packed


@pytest.fixture(scope="session")
def three_classes(tmp_path_factory):
    """folder:DIR with 3 classes of 3x32x32 images (10 per class): the shape of digits-32, other classes."""
    return "folder:" + write_folder(tmp_path_factory.mktemp("three") / "images", classes=3, per_class=10)


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory):
    """A recipe that runs in seconds: train lenet300 on digits, prune it, export it."""
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text("name: tiny\ndata: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n"
                    "  - prune: {criterion: l1, ratio: 0.3}\n  - export: {format: packed}\n")
    return path
