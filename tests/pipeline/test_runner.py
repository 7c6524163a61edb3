"""Running recipes: artefacts, a consistent report, reuse, kill -9 and resume, DDP stages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import torchslim
from torchslim.data import load_dataset
from torchslim.pipeline import compress
from torchslim.profile import count_macs, count_params
from torchslim.train import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """\
name: tiny
description: lenet5 on digits, pruned, fine-tuned with its original as teacher, exported.
data: digits-32
sensitivity: {ratios: [0.5], images: 200}
stages:
  - train: {model: lenet5, epochs: 2, lr: 0.05, no_augment: true}
  - prune: {criterion: l1, ratio: 0.5, finetune_epochs: 1, lr: 0.01}
  - finetune: {epochs: %d, lr: 0.01, teacher: original, no_augment: true}
  - export: {format: packed, huffman: true}
"""


def _recipe(tmp_path, finetune_epochs: int = 2) -> str:
    # two fine-tune epochs: the first epoch's checkpoint then lives for a whole epoch, long enough
    # for the kill -9 test to catch it on a fast machine
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY % finetune_epochs)
    return str(path)


def _state(path):
    return torchslim.load(path).state_dict()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    out = tmp / "out"
    lines = []
    report = compress(_recipe(tmp), str(out), log=lines.append)
    return tmp, out, report, lines


def test_artefacts_and_stage_files(finished):
    _, out, report, lines = finished
    for name in ("model.safetensors", "model.packed", "model.onnx", "report.json", "report.html"):
        assert (out / name).is_file(), name
    assert sorted(os.listdir(out / "stages"))[:4] == ["01-train", "02-prune", "03-finetune", "04-export"]
    assert [s["name"] for s in report["stages"]] == ["train", "prune", "finetune", "export"]
    assert any(line.startswith("[2/4] prune: top-1") for line in lines)  # one summary line per stage
    assert not [n for _, _, files in os.walk(out) for n in files if n.startswith(".tmp-")]


def test_report_matches_the_files(finished):
    _, out, report, _ = finished
    assert json.loads((out / "report.json").read_text())["table"] == report["table"]
    original_row, final_row = report["table"]
    final = torchslim.load(str(out / "model.safetensors"))
    original = torchslim.load(str(out / "stages" / "01-train" / "model.safetensors"))
    test = load_dataset("digits-32", "test")
    assert final_row["top1"] == evaluate(final, test)["top1"]
    assert original_row["top1"] == evaluate(original, test)["top1"]
    assert final_row["params"] == count_params(final) < original_row["params"] == count_params(original)
    assert final_row["macs"] == count_macs(final, (3, 32, 32)) < original_row["macs"]
    assert final_row["size_bytes"] == os.path.getsize(out / "model.safetensors")
    # the recipe's own packed export (Huffman-coded) is the packed artefact
    assert final_row["packed_bytes"] == os.path.getsize(out / "model.packed")
    assert (out / "model.packed").read_bytes() == (out / "stages" / "04-export" / "model.packed").read_bytes()
    for row in report["table"]:
        assert row["latency_ms"]["float"] > 0 and row["latency_ms"]["binary"] is None
    kept = {r["layer"]: (r["before"], r["after"]) for r in report["channels"]}
    first_conv = next(n for n, m in original.named_modules() if isinstance(m, torch.nn.Conv2d))
    assert kept[first_conv] == (original.get_submodule(first_conv).out_channels,
                                final.get_submodule(first_conv).out_channels)
    assert any(after < before for before, after in kept.values())
    assert report["pruning_rounds"][0]["round"] == 0 and report["pruning_rounds"][-1]["macs"] == final_row["macs"]
    sweep = report["sensitivity"]
    assert sweep["ratios"] == [0.5] and sweep["images"] == 200 and sweep["layers"]


def test_packed_and_onnx_artefacts_give_the_models_outputs(finished):
    import onnxruntime

    _, out, _, _ = finished
    model = torchslim.load(str(out / "model.safetensors")).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(torchslim.load(str(out / "model.packed")).eval()(x), expected)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)


def test_a_finished_run_is_reused_not_redone(finished):
    tmp, out, report, _ = finished
    before = {n: os.path.getmtime(out / "stages" / n / "result.json") for n in os.listdir(out / "stages")
              if (out / "stages" / n / "result.json").exists()}
    lines = []
    again = compress(_recipe(tmp), str(out), log=lines.append)
    assert sum("reused" in line for line in lines) == 4
    assert again["table"][1]["top1"] == report["table"][1]["top1"]
    assert before == {n: os.path.getmtime(out / "stages" / n / "result.json") for n in before}


def test_an_edited_stage_reruns_from_there_on(finished, tmp_path):
    tmp, out, _, _ = finished
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    lines = []
    compress(_recipe(tmp, finetune_epochs=3), str(copy), log=lines.append)
    reused = [line.split(":")[0] for line in lines if line.endswith("reused")]
    assert reused == ["[1/4] train", "[2/4] prune"]


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return [sys.executable, "-m", "torchslim.cli.main", *args], env


def test_kill_9_in_the_middle_then_resume_equals_an_uninterrupted_run(finished, tmp_path):
    """Killed (SIGKILL, with its stage process) while fine-tuning: the rerun reuses the finished stages,
    resumes the fine-tune from its checkpoint and ends with the uninterrupted run's exact weights."""
    tmp, done, _, _ = finished
    recipe = _recipe(tmp)
    out = tmp_path / "out"
    command, env = _cli("compress", "--recipe", recipe, "--out", str(out))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    checkpoint = out / "stages" / "03-finetune" / "model.safetensors.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert checkpoint.exists(), "the run ended before the fine-tune's first checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "stages" / "03-finetune" / "result.json").exists()
    assert not (out / "report.json").exists()
    finished_before = os.path.getmtime(out / "stages" / "02-prune" / "result.json")
    result = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.endswith("reused")] == [
        line for line in lines if line.startswith(("[1/4] train: ", "[2/4] prune: "))]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert os.path.getmtime(out / "stages" / "02-prune" / "result.json") == finished_before
    resumed, uninterrupted = _state(str(out / "model.safetensors")), _state(str(done / "model.safetensors"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert report["table"][1]["top1"] == json.loads((done / "report.json").read_text())["table"][1]["top1"]


def test_a_second_run_on_the_same_folder_is_refused(finished):
    from torchslim.errors import UserError
    from torchslim.pipeline.runner import exclusive

    _, out, _, _ = finished
    with exclusive(str(out)), pytest.raises(UserError, match="another `torchslim compress`"), exclusive(str(out)):
        pass


def test_a_failing_stage_is_one_line_and_resumable(tmp_path):
    recipe = tmp_path / "bad.yaml"
    # only the stage can find this out: its batch is larger than its own subset
    recipe.write_text("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1, subset: 64, batch_size: 100}\n")
    command, env = _cli("compress", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "torchslim: error: the train stage failed (exit code 2; its error is above); "
        "fix it and rerun the same command to resume")
    assert not (tmp_path / "out" / "stages" / "01-train" / "result.json").exists()


def test_a_training_stage_under_torchrun_with_two_processes(tmp_path):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text("data: digits-32\nstages:\n  - train: {model: lenet5, epochs: 1, no_augment: true}\n"
                      "  - finetune: {epochs: 1, lr: 0.01, nproc_per_node: 2, no_augment: true}\n")
    report = compress(str(recipe), str(tmp_path / "out"), log=lambda *_: None)
    payload = json.loads((tmp_path / "out" / "stages" / "02-finetune" / "result.json").read_text())["payload"]
    assert payload["world_size"] == 2
    assert report["stages"][1]["top1"] == report["table"][1]["top1"]
    assert "--nproc_per_node=2" in json.loads(
        (tmp_path / "out" / "stages" / "02-finetune" / "stage.json").read_text())["command"][2]


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no chromium binary on PATH (apt-get install chromium)")
def test_the_recipe_report_in_headless_chromium(finished, tmp_path):
    """Chromium draws the recipe's report.html (not blank) and its table shows report.json's values."""
    from PIL import Image

    from tests.report.conftest import parse_page
    from torchslim.report.format import cell_value, shown_columns

    _, out, _, _ = finished
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    env = dict(os.environ, HOME=str(tmp_path))
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    shot = tmp_path / "shot.png"
    drawn = subprocess.run(base + [f"--screenshot={shot}", f"file://{out / 'report.html'}"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 22)
    white = sum(n for n, rgb in colours if min(rgb) >= 250)
    assert len(colours) > 1000 and white < 0.95 * 1280 * 2400
    dom = subprocess.run(base + ["--dump-dom", f"file://{out / 'report.html'}"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    table = json.loads((out / "report.json").read_text())["table"]
    expected = {row["model"]: {key: cell_value(row, key) for key, *_ in shown_columns(table)} for row in table}
    assert parse_page(dom.stdout).rows == expected


@pytest.mark.parametrize("stages", [
    "  - lowrank: {method: svd, rank_energy: 0.9}\n  - export: {format: onnx}\n",
    "  - quantize: {method: xnor, epochs: 0, calib: 64}\n  - export: {format: packed}\n",
    "  - compress_weights: {method: pq, bits: 4, subvector: 2}\n",
    "  - distill: {student: lenet5, width_mult: 0.5, epochs: 1, teacher: original}\n",
], ids=["lowrank", "quantize", "pq", "distill"])
def test_each_kind_of_stage_runs_in_a_recipe(tmp_path, stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: digits-32\nstages:\n  - train: {model: lenet5, epochs: 1, no_augment: true}\n" + stages)
    report = compress(str(recipe), str(tmp_path / "out"), log=lambda *_: None)
    final = torchslim.load(str(tmp_path / "out" / "model.safetensors"))
    assert report["table"][1]["top1"] == evaluate(final, load_dataset("digits-32", "test"))["top1"]
    assert report["table"][1]["packed_bytes"] == os.path.getsize(tmp_path / "out" / "model.packed")
    if "quantize" in stages:
        assert report["table"][1]["latency_ms"]["binary"] is not None
        assert report["table"][1]["params"] == report["table"][0]["params"]  # binary codes count as weights
