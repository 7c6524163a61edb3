"""The shipped recipes (quick variants) and `torchslim demo --quick`, end to end, on Fashion-MNIST."""

from __future__ import annotations

import json
import os

import pytest

import torchslim
from torchslim.pipeline import compress, load_recipe, plan, shipped_recipes

from ..conftest import needs_fashion_mnist, run_cli

RECIPES = os.path.join(os.path.dirname(torchslim.__file__), "recipes")
SOURCES = {"taylor-vgg16", "hwgq-bwn-vgg14", "oicsr-resnet56", "kd-mobilenetv2", "deep-compression-lenet"}


def test_every_source_has_a_shipped_recipe_that_plans_in_both_variants():
    assert SOURCES <= set(shipped_recipes())
    for name in SOURCES:
        recipe = load_recipe(name)
        full, quick = plan(recipe), plan(recipe, quick=True)
        assert [s.name for s in full] == [s.name for s in quick]
        assert full != quick  # the quick variant really is a different, shorter run


def test_a_prune_stage_passes_its_teacher_to_the_verb(tmp_path):
    # prune takes --teacher original itself; the pipeline must not swallow it as it resolves managed teachers
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    stages = {s.name: s for s in plan(load_recipe(os.path.join(RECIPES, "demo", "taylor.yaml")), model=str(model))}
    argv = stages["prune"].argv
    assert argv[argv.index("--teacher") + 1] == "original"


@needs_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_quick_variant_runs(tmp_path, name):
    report = compress(name, str(tmp_path), quick=True, progress=False, log=lambda *_: None)
    before, after = report["table"]
    for key in ("model.safetensors", "model.packed", "report.json", "report.html"):
        assert (tmp_path / key).is_file()
    assert after["packed_bytes"] == os.path.getsize(tmp_path / "model.packed")
    assert 0 <= after["top1"] <= 1
    if name in ("taylor-vgg16", "oicsr-resnet56"):
        assert after["macs"] < before["macs"] and report["pruning_rounds"] and report["sensitivity"]["layers"]
    if name == "hwgq-bwn-vgg14":
        assert after["latency_ms"]["binary"] is not None
        assert before["size_bytes"] / after["packed_bytes"] > 4  # float first/last layers weigh most at this width
    if name == "kd-mobilenetv2":
        assert after["macs"] < before["macs"]
    if name == "deep-compression-lenet":
        assert before["size_bytes"] / after["packed_bytes"] > 10


@needs_fashion_mnist
@pytest.mark.slow
def test_demo_quick(tmp_path):
    result = run_cli("demo", "--quick", "--out", tmp_path, "--json", timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["model"] for row in report["table"]] == [
        "original", "pruned (Taylor, 50% MACs)", "binary (HWGQ + BWN)", "student (thin VGG14 KD)"]
    original, pruned, binary, student = report["table"]
    assert pruned["macs"] <= 0.55 * original["macs"] and student["macs"] < original["macs"]
    assert binary["latency_ms"]["binary"] is not None and binary["packed_bytes"] < original["packed_bytes"] / 4
    # every row on every int8 runtime, the binary row also on our kernels, each column naming its runtime
    for row in report["table"]:
        assert row["latency_ms"]["float"] > 0 and row["latency_ms"]["int8"] > 0
        assert ("openvino_int8" in row["latency_ms"]) == ("openvino_int8" in report["runtimes"])
    assert report["runtimes"]["float"].startswith("eager torch fp32 (torch ")
    assert report["runtimes"]["int8"].startswith("ONNX Runtime int8 (onnxruntime ")
    assert report["runtimes"]["binary"].startswith("torchslim binary kernels (compiled, ")
    assert report["runtimes"]["binary"].endswith(" path)") and "reference" not in report["runtimes"]["binary"]
    found = report["verdict"]
    assert found["binary_vs_best_int8"] == pytest.approx(
        found["best_int8_of_original"]["ms"] / binary["latency_ms"]["binary"], rel=1e-2)
    assert set(found["pruned_speedup"]) >= {"eager torch fp32", "ONNX Runtime int8"}
    assert found["max_top1_loss"] == pytest.approx(original["top1"] - min(r["top1"] for r in report["table"][1:]),
                                                   abs=1e-4)
    lines = result.stdout.splitlines()
    head = next(line for line in lines if line.startswith("model "))
    assert "eager torch fp32" in head and "ONNX Runtime int8" in head and "torchslim binary kernels" in head
    assert any(line.startswith("binary row on torchslim binary kernels: ") for line in lines)
    assert f"report: {tmp_path}/report.html" in result.stdout
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["table"] == report["table"]
