"""compress-weights flags for the AGP ramp length and the distillation strength."""

import json

import pytest
import torch

import torchslim

from .helpers import trained_mlp


def _saved_mlp(tmp_path):
    path = tmp_path / "mlp.safetensors"
    torchslim.save(trained_mlp(), path, input_shape=(1, 8, 8))
    return path


@pytest.mark.parametrize("flags, message", [
    (["--method", "magnitude", "--schedule", "agp", "--agp-fraction", "0"], "--agp-fraction must be in (0, 1]"),
    (["--method", "magnitude", "--schedule", "oneshot", "--agp-fraction", "0.5"], "applies to --method magnitude"),
    (["--method", "kmeans", "--agp-fraction", "0.5"], "applies to --method magnitude"),
    (["--method", "kmeans", "--alpha", "0.5"], "need --distill"),
    (["--method", "kmeans", "--criterion", "folded"], "--criterion applies to magnitude"),
])
def test_bad_schedule_and_distill_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    from torchslim.cli.main import main

    source, out = _saved_mlp(tmp_path), tmp_path / "never.safetensors"
    assert main(["compress-weights", str(source), *flags, "--data", "digits", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("torchslim: error:") and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_short_agp_ramp_with_distillation_reaches_the_exact_target(tmp_path, capsys):
    from torchslim.cli.main import main

    source, out = _saved_mlp(tmp_path), tmp_path / "pruned.safetensors"
    before = torchslim.load(source)
    argv = ["compress-weights", str(source), "--method", "magnitude", "--schedule", "agp", "--agp-fraction", "0.25",
            "--layer-sparsity", "classifier.0=0.9,classifier.3=0.6,classifier.6=0.5", "--finetune-epochs", "2",
            "--no-augment", "--distill", "--temperature", "2", "--alpha", "0.5", "--data", "digits",
            "--out", str(out), "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    layers = {row["name"]: row["sparsity"] for row in report["layers"]}
    assert layers == {"classifier.0": pytest.approx(0.9, abs=1e-3), "classifier.3": pytest.approx(0.6, abs=1e-3),
                      "classifier.6": pytest.approx(0.5, abs=1e-3)}
    assert report["top1"] >= report["top1_before"] - 0.05
    pruned = torchslim.load(out)
    assert not torch.equal(pruned.classifier[3].weight, before.classifier[3].weight)  # it did fine-tune


def _kmeans_argv(source, out, *teacher_flags):
    return ["compress-weights", str(source), "--method", "kmeans", "--bits", "3", "--finetune-epochs", "1",
            "--lr", "0.01", "--no-augment", *teacher_flags, "--alpha", "1", "--data", "digits", "--out", str(out)]


def test_teacher_file_replaces_the_input_model_as_teacher(tmp_path, capsys):
    from torchslim import models
    from torchslim.cli.main import main

    source, other = _saved_mlp(tmp_path), tmp_path / "other.safetensors"
    torch.manual_seed(1)
    torchslim.save(models.create("lenet300", num_classes=10, in_channels=1, width_mult=0.5, input_size=(8, 8)),
                   other, input_shape=(1, 8, 8))
    runs = {"distill": ["--distill"], "self": ["--teacher", str(source)], "other": ["--teacher", str(other)]}
    trained = {}
    for name, flags in runs.items():
        out = tmp_path / f"kmeans-{name}.safetensors"  # never onto a teacher file
        assert main(_kmeans_argv(source, out, *flags)) == 0, capsys.readouterr().err
        trained[name] = torchslim.load(out)
    state = {name: model.state_dict() for name, model in trained.items()}
    assert all(torch.equal(state["distill"][k], state["self"][k]) for k in state["distill"])  # same teacher
    assert not all(torch.equal(state["distill"][k], state["other"][k]) for k in state["distill"])
    assert trained["other"].torchslim_meta["compress_weights"]["teacher"] == str(other)


def test_recipe_stage_teacher_original_reaches_compress_weights(tmp_path):
    from torchslim.pipeline import load_recipe, plan
    from torchslim.pipeline.runner import stage_argv

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n"
                      "  - compress_weights: {method: magnitude, finetune_epochs: 1, teacher: original}\n"
                      "  - compress_weights: {method: kmeans, finetune_epochs: 1, teacher: previous, alpha: 0.5}\n")
    prune, share = plan(load_recipe(str(recipe)))[1:]
    assert stage_argv(prune, "in.st", "out.st", "orig.st")[-5:] == ["--teacher", "orig.st", "--out", "out.st", "--json"]
    assert stage_argv(share, "in.st", "out.st", "orig.st")[-5:] == ["--teacher", "in.st", "--out", "out.st", "--json"]


def test_recipe_criterion_reaches_compress_weights_and_is_checked(tmp_path):
    from torchslim.errors import UserError
    from torchslim.pipeline import load_recipe, plan
    from torchslim.pipeline.runner import stage_argv

    recipe = tmp_path / "r.yaml"
    stage = "  - compress_weights: {method: magnitude, schedule: agp, finetune_epochs: 1, criterion: %s}\n"
    recipe.write_text("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n" + stage % "folded")
    prune = plan(load_recipe(str(recipe)))[1]
    argv = stage_argv(prune, "in.st", "out.st", "orig.st")
    assert argv[argv.index("--criterion") + 1] == "folded"
    recipe.write_text("data: digits\nstages:\n  - train: {model: lenet300, epochs: 1}\n" + stage % "folder")
    with pytest.raises(UserError, match="did you mean 'folded'"):
        plan(load_recipe(str(recipe)))
