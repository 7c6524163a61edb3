"""Every way a recipe can be wrong gets one line naming the file, the line and the key (exit code 2)."""

from __future__ import annotations

import pytest

from torchslim.cli.main import main
from torchslim.export.onnx import supported_opsets
from torchslim.pipeline.schema import STAGES, choices_for, stage_options

# (name, recipe text, the message after "torchslim: error: P:", where P is the recipe's path).
# Lists that grow with the toolkit (a verb's flags, the registries) are filled in from the
# live schema, so the messages' wording is pinned here and their lists stay current.
BAD_RECIPES = [
    ('not_yaml', 'stages: [\n  - train: {model: lenet5\n',
     "2: not valid YAML (expected the node content, but found '-')"),
    ('not_mapping', '- train: {model: lenet5}\n',
     "1: a recipe is a mapping with a 'stages:' list"),
    ('unknown_top', 'data: digits-32\nstage:\n  - train: {model: lenet5}\n',
     "2: unknown top-level key 'stage' (did you mean 'stages'?); choose from: data, description, name, quick, sensitivity, stages"),
    ('no_stages', 'data: digits-32\n',
     "1: the recipe has no 'stages:' list"),
    ('empty_stages', 'data: digits-32\nstages: []\n',
     "2: stages must be a non-empty list like '- prune: {criterion: l1, ratio: 0.5}'"),
    ('two_keys', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n    prune: {ratio: 0.5}\n',
     "3: stage 1 must be a one-key mapping like '- prune: {...}', got {'train': {'model': 'lenet5'}, 'prune': {'ratio': 0.5}}"),
    ('unknown_stage', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prun: {ratio: 0.5}\n',
     "4: stage 2: unknown stage 'prun' (did you mean 'prune'?); choose from: compress_weights, distill, export, finetune, load, lowrank, prune, quantize, train"),
    ('options_not_mapping', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: 0.5\n',
     '4: stage 2 (prune): options must be a mapping, got 0.5'),
    ('unknown_option', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {criterio: l1, ratio: 0.5}\n',
     "4: stage 2 (prune): unknown option 'criterio' (did you mean 'criterion'?); choose from: {prune_options}"),
    ('wrong_type', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune:\n      target_macs: a lot\n',
     "5: stage 2 (prune): target_macs must be a number, got 'a lot'"),
    ('out_of_range', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {target_macs: 1.5}\n',
     '4: stage 2 (prune): target_macs must be in (0, 1], got 1.5'),
    ('ratio_one', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 1.0}\n',
     '4: stage 2 (prune): ratio must be in [0, 1), got 1.0'),
    ('opset_beyond_the_exporter', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - export: {format: onnx, opset: 99}\n',
     '4: stage 2 (export): opset must be in [7, {max_opset}], got 99'),
    ('negative_epochs', 'data: digits-32\nstages:\n  - train: {model: lenet5, epochs: -1}\n',
     '3: stage 1 (train): epochs must be in [0, inf), got -1'),
    ('bool_type', "data: digits-32\nstages:\n  - train: {model: lenet5}\n  - quantize: {method: xnor, alt_update: 'yes'}\n",
     "4: stage 2 (quantize): alt_update must be true or false, got 'yes'"),
    ('unknown_criterion', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {criterion: tayler, ratio: 0.5}\n',
     "4: stage 2 (prune): unknown criterion value 'tayler' (did you mean 'taylor'?); choose from: {criteria}"),
    ('unknown_method', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - quantize: {method: hwgq}\n',
     "4: stage 2 (quantize): unknown method value 'hwgq' (did you mean 'hwgq-bwn'?); choose from: {quantize_methods}"),
    ('unknown_model', 'data: digits-32\nstages:\n  - train: {model: vgg15}\n',
     "3: stage 1 (train): unknown model value 'vgg15' (did you mean 'vgg16'?); choose from: {models}"),
    ('quick_unknown', 'data: digits-32\nquick: {epoch: 1}\nstages:\n  - train: {model: lenet5}\n',
     "2: quick: unknown option 'epoch' (did you mean 'epochs'?); choose from: {all_options}"),
    ('stage_quick_range', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 0.5, quick: {finetune_epochs: -2}}\n',
     '4: stage 2 (prune) quick: finetune_epochs must be in [0, inf), got -2'),
    ('duplicate_key', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune:\n      ratio: 0.5\n      ratio: 0.4\n',
     "6: key 'ratio' is given twice"),
    ('missing_target', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {criterion: l1}\n',
     '4: stage 2 (prune): give target_macs, target_params, target_latency (any of them) or ratio'),
    ('two_targets', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 0.5, target_macs: 0.5}\n',
     '4: stage 2 (prune): ratio cannot be combined with target_macs, target_params or target_latency'),
    ('steps_with_ratio', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 0.5, step_channels: 8}\n',
     '4: stage 2 (prune): step_channels needs target_macs or target_params (the rounds stop at the target)'),
    ('first_not_train', 'data: digits-32\nstages:\n  - prune: {ratio: 0.5}\n',
     "3: stage 1 must be 'train' or 'load' (or give --model FILE)"),
    ('train_later', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - train: {model: lenet5}\n',
     '4: stage 2 (train) can only be the first stage'),
    ('load_no_file', 'data: digits-32\nstages:\n  - load: {}\n',
     "3: stage 1 (load): needs either 'file:' or 'source:' (or give --model FILE or SOURCE)"),
    ('nproc_on_prune', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 0.5, nproc_per_node: 2}\n',
     "4: stage 2 (prune): unknown option 'nproc_per_node'; choose from: {prune_options}"),
    ('sensitivity_ratio', 'data: digits-32\nsensitivity: {ratios: [0.5, 1.5]}\nstages:\n  - train: {model: lenet5}\n',
     '2: sensitivity: ratios must be a list of numbers in (0, 1), got [0.5, 1.5]'),
    ('export_format', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - export: {format: zip}\n',
     "4: stage 2 (export): unknown format value 'zip'; choose from: onnx, openvino, packed"),
    ('name_type', 'name: 123\ndata: digits-32\nstages:\n  - train: {model: lenet5}\n',
     '1: name must be a non-empty string, got 123'),
    ('teacher_missing', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - finetune: {teacher: nowhere.safetensors}\n',
     "4: stage 2 (finetune): teacher must be 'original', 'previous' or an existing file, got 'nowhere.safetensors'"),
    ('prune_teacher_previous', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - prune: {ratio: 0.5, teacher: previous}\n',
     "4: stage 2 (prune): unknown teacher value 'previous'; choose from: original"),
    ('no_data', 'stages:\n  - train: {model: lenet5}\n',
     "2: stage 1 (train): no data set: give --data or 'data:' in the recipe"),
    ('lowrank_method', 'data: digits-32\nstages:\n  - train: {model: lenet5}\n  - lowrank: {method: kmeans}\n',
     "4: stage 2 (lowrank): unknown method value 'kmeans'; choose from: svd, tucker"),
]


def _joined(values) -> str:
    return ", ".join(sorted(values))


def _lists() -> dict:
    return {
        "prune_options": _joined(stage_options("prune")),
        "all_options": _joined({k for stage in STAGES for k in stage_options(stage)}),
        "quantize_methods": _joined(choices_for("quantize", stage_options("quantize")["method"])),
        "criteria": _joined(choices_for("prune", stage_options("prune")["criterion"])),
        "models": _joined(choices_for("train", stage_options("train")["model"])),
        "max_opset": str(supported_opsets().stop - 1),
    }


@pytest.mark.parametrize("name,text,message", BAD_RECIPES, ids=[case[0] for case in BAD_RECIPES])
def test_bad_recipe_is_one_line_with_file_and_line(tmp_path, capsys, name, text, message):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert main(["compress", "--recipe", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    for key, value in _lists().items():  # not str.format: messages quote YAML braces
        message = message.replace("{" + key + "}", value)
    assert captured.err == f"torchslim: error: {path}:{message}\n"
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_at_least_twenty_distinct_mistakes(tmp_path, capsys):
    """The library refuses at least twenty different mistakes, each with its own message."""
    refusals = set()
    for name, text, _ in BAD_RECIPES:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        assert main(["compress", "--recipe", str(path), "--out", str(tmp_path / "out")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("torchslim: error: ") and err.count("\n") == 1, (name, err)
        refusals.add(err.replace(str(path), "RECIPE"))
    assert len(refusals) >= 20
