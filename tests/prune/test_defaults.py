"""``round_to="auto"``: the runtime's channel block on this CPU, halved where a narrow model needs it."""

import pytest
import torch

from torchslim import models
from torchslim.cli.main import build_parser
from torchslim.errors import UserError
from torchslim.prune import PruneConfig, api, prune
from torchslim.prune.defaults import ROUND_TO, RUNTIMES, round_to_for


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_multiple_is_the_simd_block_and_one_where_unmeasured(runtime):
    assert round_to_for(runtime, "AVX512") == 16 and round_to_for(runtime, "AVX2") == 8
    assert round_to_for(runtime, "SVE256") == 1 and round_to_for(runtime, "DEFAULT") == 1
    assert round_to_for(runtime) == ROUND_TO.get((runtime, torch.backends.cpu.get_cpu_capability()), 1)


def test_auto_resolves_in_the_config_and_names_bad_runtimes():
    config = PruneConfig(target_macs=0.5, round_to="auto", latency_runtime="ort")
    assert config.round_to == round_to_for("ort") and config.auto_round_to is True
    assert PruneConfig.from_dict(config.to_dict()) == config
    assert PruneConfig(target_macs=0.5).round_to == 1  # the Python default stays exact
    with pytest.raises(UserError, match="runtime"):
        round_to_for("tensorrt")


def _kept(result):
    return {row["group"]: row["after"] for row in result.channels}


def test_a_multiple_too_coarse_for_a_narrow_model_is_halved(monkeypatch):
    monkeypatch.setattr(api, "round_to_for", lambda runtime: 16)
    torch.manual_seed(0)
    model = models.create("lenet5", num_classes=10)  # 6 and 16 channels: one block of 16 at most
    example = torch.randn(1, *model.input_shape)
    result = prune(model, PruneConfig(criterion="l1", target_macs=0.5, round_to="auto"), example_inputs=example)
    assert result.round_to < 16
    assert result.macs_after <= 0.5 * result.macs_before * (1 + 1e-6)
    before = {row["group"]: row["before"] for row in result.channels}
    assert all(k == before[g] or k % result.round_to == 0 for g, k in _kept(result).items())
    # a fixed multiple is never changed behind the caller's back
    with pytest.raises(UserError, match="round_to=16"):
        prune(model, PruneConfig(criterion="l1", target_macs=0.5, round_to=16), example_inputs=example)


def test_a_ratio_that_rounds_to_nothing_gets_a_finer_multiple(monkeypatch):
    monkeypatch.setattr(api, "round_to_for", lambda runtime: 16)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3), torch.nn.ReLU(), torch.nn.Conv2d(12, 12, 3),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(12, 10))  # groups of 12 channels: 16 rounds every cut away
    result = prune(model, PruneConfig(criterion="l1", ratio=0.25, round_to="auto"),
                   example_inputs=torch.randn(1, 3, 16, 16))
    assert result.round_to == 8 and sorted(_kept(result).values()) == [8, 8]


def test_the_cli_defaults_to_auto_and_checks_the_flag():
    parser = build_parser()
    base = ["prune", "m.safetensors", "--target-macs", "0.5", "--out", "o.safetensors"]
    assert parser.parse_args(base).round_to == "auto"
    assert parser.parse_args(base + ["--round-to", "8"]).round_to == 8
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(base + ["--round-to", "0"])
    assert exit_info.value.code == 2
