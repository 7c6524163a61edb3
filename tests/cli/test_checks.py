"""The shared checks of torchslim/checks.py, in process."""

import argparse
import os

import pytest
import torch

from torchslim.checks import (check_applies, check_fits_data, check_paths, given_dests, int_range,
                                  float_range, probe_writable, remove_stale_temporaries)
from torchslim.data import load_dataset
from torchslim.errors import UserError
from torchslim.train import TrainConfig, fit
from torchslim.train.checkpoint import data_digest, model_digest


def _parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=["packed", "onnx"], default="packed")
    parser.add_argument("--huffman", action="store_true")
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false")
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--opset", type=int, default=17)
    return parser


def test_given_dests_are_the_flags_on_the_command_line_only():
    parser = _parser()
    assert given_dests(parser, []) == set()
    assert given_dests(parser, ["--opset", "17", "--ignore", "a", "--no-fold-bn"]) == {"opset", "ignore", "fold_bn"}


@pytest.mark.parametrize("argv, refused", [
    (["--format", "onnx", "--huffman"], "--huffman applies to --format packed only, not to --format onnx"),
    (["--format", "onnx", "--no-fold-bn"], "--no-fold-bn applies to --format packed"),
    (["--format", "packed", "--opset", "17"], "--opset applies to --format onnx"),
    (["--format", "packed", "--huffman", "--no-fold-bn"], None),
    (["--format", "onnx", "--opset", "13"], None),
])
def test_a_flag_given_where_it_does_nothing_is_refused(argv, refused):
    parser = _parser()
    args = parser.parse_args(argv)
    args.applies = {"--huffman": ("format", ("packed",)), "--no-fold-bn": ("format", ("packed",)),
                    "--opset": ("format", ("onnx",))}
    if refused is None:
        check_applies(args, given_dests(parser, argv))
    else:
        with pytest.raises(UserError, match=refused):
            check_applies(args, given_dests(parser, argv))


@pytest.mark.parametrize("parse, good, bad", [
    (int_range(0, 2**32 - 1), ["0", "4294967295"], ["-1", "4294967296", str(2**70), "1.5", "x"]),
    (float_range(0, 64, low_open=True), ["0.25", "64"], ["0", "-1", "64.5", "nan", "inf", "1e4"]),
])
def test_ranged_types_accept_the_range_and_refuse_the_rest(parse, good, bad):
    assert [parse(v) for v in good] == [type(parse(good[0]))(v) for v in good]
    for value in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(value)


def test_probe_writable_leaves_nothing_and_refuses_what_cannot_be_written(tmp_path):
    probe_writable(str(tmp_path / "new" / "deeper" / "m.safetensors"), "--out")
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    for path, folder in [(tmp_path / "file" / "m.safetensors", False), (tmp_path, False),
                         (tmp_path / "file", True), ("/proc/m.safetensors", False)]:
        with pytest.raises(UserError):
            probe_writable(str(path), "--out", folder=folder)
    assert os.listdir(tmp_path) == ["file"]


def test_check_paths_refuses_outputs_on_inputs_and_on_each_other(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_text("x")
    same = argparse.Namespace(file=str(model), out=str(tmp_path / "." / "m.safetensors"))
    with pytest.raises(UserError, match="the input file"):
        check_paths(same)
    twice = argparse.Namespace(file=str(model), out=str(tmp_path / "q"), packed=str(tmp_path / "q"))
    with pytest.raises(UserError, match="both name"):
        check_paths(twice)
    inside = argparse.Namespace(model=str(model), out=str(tmp_path), out_is_folder=True)
    with pytest.raises(UserError, match="inside --out"):
        check_paths(inside)
    check_paths(argparse.Namespace(file=str(model), out=str(tmp_path / "other.safetensors")))
    assert model.read_text() == "x"


def test_only_our_own_temporaries_are_removed(tmp_path):
    ours = [".tmp-m.safetensors.abc_1234", ".tmp-m.safetensors.ckpt.zzzzzzzz"]
    theirs = [".tmp-m.safetensors", ".tmp-m.safetensors.toolongname", ".tmp-n.safetensors.abcd1234", "m.safetensors"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    assert sorted(remove_stale_temporaries(str(tmp_path / "m.safetensors"))) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)


class _Tiny(torch.nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self, classes=10):
        super().__init__()
        self.fc = torch.nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_model_against_data_checks_shape_and_classes():
    digits = load_dataset("digits", "test")
    assert check_fits_data(_Tiny(), digits, "tiny").shape == (1, 10)
    with pytest.raises(UserError, match="tiny predicts 7 classes but the data has 10"):
        check_fits_data(_Tiny(7), digits, "tiny")
    with pytest.raises(UserError, match="tiny cannot take input 3x32x32 from digits-32: it takes 1x8x8"):
        check_fits_data(_Tiny(), load_dataset("digits-32", "test"), "tiny", "digits-32")


def test_the_resume_key_tells_models_and_data_apart():
    torch.manual_seed(0)
    a = _Tiny()
    torch.manual_seed(1)
    assert model_digest(a) == model_digest(_Tiny()) != model_digest(_Tiny(7))
    digits = load_dataset("digits", "train")
    assert data_digest(digits) != data_digest(digits.subset(500)) == data_digest(digits.subset(500))


def test_fit_refuses_a_batch_larger_than_the_data():
    data = load_dataset("digits", "train", subset=50)
    with pytest.raises(UserError, match="has 50 images, fewer than one batch of 64"):
        fit(_Tiny(), data, TrainConfig(epochs=1, batch_size=64), progress=False)


@pytest.mark.parametrize("field, value", [("weight_decay", -1.0), ("seed", 2**70), ("seed", -1),
                                          ("momentum", 1.5), ("lr", float("inf"))])
def test_train_config_refuses_impossible_numbers(field, value):
    with pytest.raises(UserError):
        TrainConfig(**{field: value})


def test_a_checkpoint_of_another_starting_file_is_refused(tmp_path):
    data = load_dataset("digits", "train", subset=128)
    config = TrainConfig(epochs=1, batch_size=64)
    fit(_Tiny(), data, config, checkpoint_path=tmp_path / "c.ckpt", progress=False, resume_extra={"start": "a"})
    with pytest.raises(UserError, match="belongs to another run .*starting file"):
        fit(_Tiny(), data, config, checkpoint_path=tmp_path / "c.ckpt", progress=False, resume_extra={"start": "b"})
    with pytest.raises(UserError, match="belongs to another run .*model"):
        fit(_Tiny(7), data, config, checkpoint_path=tmp_path / "c.ckpt", progress=False, resume_extra={"start": "a"})
    history = fit(_Tiny(), data, config, checkpoint_path=tmp_path / "c.ckpt", progress=False,
                  resume_extra={"start": "a"})
    assert [e["epoch"] for e in history["epochs"]] == [1]
