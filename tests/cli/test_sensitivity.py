"""``torchslim sensitivity`` end to end on a tiny saved model."""

import json

import pytest
import torch
from PIL import Image

import torchslim
from torchslim import models
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sensitivity")
    torch.manual_seed(0)
    path = folder / "vgg11.safetensors"
    torchslim.save(models.create("vgg11", num_classes=10, width_mult=0.125), path)
    return folder, path


def test_json_table_and_plot(saved):
    folder, path = saved
    plot = folder / "curves.png"
    proc = run_cli("sensitivity", path, "--data", "digits-32", "--ratios", "0.5,0.25", "--images", "40",
                   "--plot", plot, "--json", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["ratios"] == [0.25, 0.5] and result["images"] == 40 and result["criterion"] == "l1"
    assert result["layers"][0] == {"layer": "features.0", "channels": 8, "kept": [6, 4],
                                   "top1": result["layers"][0]["top1"]}
    assert all(0 <= t <= 1 for row in result["layers"] for t in row["top1"])
    table = "\n".join(lines[:-1])
    assert "removed 25%" in table and "removed 50%" in table
    for row in result["layers"]:
        line = next(text for text in lines if text.split()[:1] == [row["layer"]])
        assert line.split()[1] == str(row["channels"])
        assert f"{row['top1'][1]:.2%}" in line and f"({(row['top1'][1] - result['baseline_top1']) * 100:+.2f})" in line
    with Image.open(plot) as image:
        image.load()
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
    assert sorted(p.name for p in folder.iterdir()) == ["curves.png", "vgg11.safetensors"]


@pytest.mark.parametrize("ratios, message", [("0.5,abc", "comma-separated"), ("0.5,1.5", "(0, 1)")])
def test_bad_ratios_are_one_line_exit_2(saved, ratios, message):
    folder, path = saved
    plot = folder / "never.png"
    proc = run_cli("sensitivity", path, "--data", "digits-32", "--ratios", ratios, "--plot", plot)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchslim: error:") and message in lines[0], proc.stderr
    assert proc.stdout == "" and not plot.exists()
