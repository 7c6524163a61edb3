"""``torchslim prune`` end to end in a fresh process: the --json contract and the errors."""

import json
import os

import pytest
import torch

import torchslim
from .conftest import build

KEYS = {"macs_before", "macs_after", "params_before", "params_after", "top1_before", "top1_after",
        "latency_ms_before", "latency_ms_after"}


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prune") / "base.safetensors"
    torchslim.save(build("vgg11", width=0.25), path)
    return path


def _main(capsys, *args):
    from torchslim.cli.main import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prune_json_contract(base_file, tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    code, stdout, stderr = _main(capsys, "prune", base_file, "--criterion", "taylor", "--target-macs", "0.5", "--target-params", "0.3",
                                 "--data", "digits-32", "--subset", "200", "--finetune-epochs", "1", "--round-to", "4",
                                 "--calibration-batches", "2", "--out", out, "--json", "--threads", "1")
    assert code == 0, stderr
    payload = json.loads(stdout.strip().splitlines()[-1])
    assert KEYS <= set(payload)
    assert payload["macs_after"] <= 0.5 * payload["macs_before"]
    assert payload["params_after"] <= 0.3 * payload["params_before"]
    assert payload["size_bytes_after"] < 0.35 * payload["size_bytes_before"]
    assert 0 <= payload["top1_before"] <= 1 and 0 <= payload["top1_after"] <= 1
    pruned = torchslim.load(out)
    from torchslim.profile import count_macs

    assert count_macs(pruned, (3, 32, 32)) == payload["macs_after"]
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 4 == 0 for c in convs)
    assert not os.path.exists(str(out) + ".finetune.ckpt")


def test_a_latency_target_reports_the_saved_model_on_its_runtime(base_file, tmp_path, capsys):
    out = tmp_path / "fast.safetensors"
    code, stdout, stderr = _main(capsys, "prune", base_file, "--criterion", "l1", "--scope", "global",
                                 "--target-latency", "0.7", "--latency-runtime", "torch", "--round-to", "4",
                                 "--data", "digits-32", "--subset", "200", "--out", out, "--json", "--threads", "1")
    assert code == 0, stderr
    payload = json.loads(stdout.strip().splitlines()[-1])
    t = payload["target_latency"]
    assert t["runtime"] == "torch" and t["threads"] == 1 and t["target"] == 0.7
    assert t["before_ms"] > 0 and t["after_ms"] > 0
    assert t["share"] == pytest.approx(t["after_ms"] / t["before_ms"])
    assert t["speedup"] == pytest.approx(1 / t["share"])
    assert payload["macs_after"] < payload["macs_before"]


def test_iterative_with_regulariser_and_bn_folding(base_file, tmp_path, capsys):
    out = tmp_path / "iter.safetensors"
    code, stdout, stderr = _main(capsys, "prune", base_file, "--criterion", "l1", "--target-macs", "0.6",
                                 "--step-channels", "60", "--regularize", "slim", "--lambda", "1e-4",
                                 "--regularize-epochs", "1", "--fold-bn", "--data", "digits-32", "--subset", "200",
                                 "--out", out, "--json", "--threads", "1")
    assert code == 0, stderr
    payload = json.loads(stdout.strip().splitlines()[-1])
    assert len(payload["rounds"]) >= 2 and payload["macs_after"] <= 0.6 * payload["macs_before"]
    pruned = torchslim.load(out)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in pruned.modules())
    assert not os.path.exists(str(out) + ".rounds")


def test_distillation_share_zero_is_the_plain_fine_tune(base_file, tmp_path, capsys):
    common = ["--criterion", "l1", "--target-macs", "0.5", "--data", "digits-32", "--subset", "128",
              "--finetune-epochs", "1", "--batch-size", "64", "--threads", "1", "--json"]
    outs = {}
    for name, extra in {"plain": [], "share0": ["--teacher", "original", "--alpha", "0", "--temperature", "3"],
                        "kd": ["--teacher", "original", "--alpha", "0.5", "--temperature", "2"]}.items():
        outs[name] = tmp_path / f"{name}.safetensors"
        code, _, stderr = _main(capsys, "prune", base_file, *common, *extra, "--out", outs[name])
        assert code == 0, stderr
    plain, share0, kd = (torchslim.load(outs[n]) for n in ("plain", "share0", "kd"))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), share0.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), kd.state_dict().values()))
    assert (kd.torchslim_meta["temperature"], kd.torchslim_meta["alpha"]) == (2.0, 0.5)


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.0"], "ratio must be in"),
    (["--ratio", "-0.2"], "ratio must be in"),
    (["--ratio", "0.3", "--criterion", "l3"], "unknown criterion 'l3'"),
    (["--ratio", "0.3", "--criterion", "taylor"], "--data is needed"),
    (["--ratio", "0.3", "--scope", "local"], "unknown scope"),
    (["--ratio", "0.3", "--target-params", "0.5"], "--ratio cannot be combined"),
    (["--criterion", "l1"], "give --target-macs, --target-params, --target-latency (any of them) or --ratio"),
    (["--ratio", "0.3", "--rounds", "2"], "--rounds needs --target-macs"),
    (["--target-macs", "0.5", "--rounds", "2", "--step-channels", "8"], "give --step-channels or --rounds, not both"),
    (["--target-macs", "0.5", "--rounds", "-1"], "must be >= 0"),
    (["--ratio", "0.3", "--temperature", "2"], "--temperature and --alpha need --teacher"),
    (["--ratio", "0.3", "--teacher", "original", "--alpha", "1.5"], "alpha (the teacher's share of the loss)"),
    (["--ratio", "0.3", "--teacher", "original", "--temperature", "0"], "temperature must be > 0"),
])
def test_bad_input_is_one_line_and_exit_2(base_file, tmp_path, args, message, capsys):
    out = tmp_path / "never.safetensors"
    code, _, stderr = _main(capsys, "prune", base_file, *args, "--out", out)
    assert code == 2
    assert stderr.startswith("torchslim: error:") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_model_without_prunable_channels_is_a_user_error(tmp_path, capsys):
    from torchslim import models

    model = models.create("binary_resnet20", width_mult=0.0625)  # 1-channel stream: nothing to remove
    torchslim.save(model, tmp_path / "b.safetensors")
    code, _, stderr = _main(capsys, "prune", tmp_path / "b.safetensors", "--target-macs", "0.1",
                            "--out", tmp_path / "o.safetensors")
    assert code == 2 and "torchslim: error:" in stderr
    assert not (tmp_path / "o.safetensors").exists()
