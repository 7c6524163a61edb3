"""Every torchvision classification builder through prune: parametrised over
``torchvision.models.list_models``, so a new release is covered as it lands.

A representative third (the smallest third of each family, alternating
the two settings) runs by default; every other (model, setting) pair is marked slow.  The
settings: 0.5 of the MACs with l2 (global) and 0.33 with taylor; the pruned model keeps the output shape and meets the
target, and the caller's model is unchanged.  A model that cannot be pruned must be
refused with a one-line UserError whose text is the same from run to run.
"""

import tempfile

import pytest
import torch

from torchslim.errors import UserError
from torchslim.prune import PruneConfig, prune

from .thirdparty import (build_source, build_torchvision, reload_in_fresh_process, representative_third,
                         torchvision_builders)

ALL = torchvision_builders()
DEFAULT = representative_third(ALL) if ALL else []
SETTINGS = (("l2", 0.5), ("taylor", 0.33))
DEFAULT_CASES = [(name, SETTINGS[index % 2]) for index, name in enumerate(DEFAULT)]
SLOW_CASES = [(name, setting) for name in ALL for setting in SETTINGS if (name, setting) not in DEFAULT_CASES]
# save -> load in a fresh process: by default the builders whose saving broke once (per-module
# state versions; the top module's class token and width), every other one with the slow tests
RELOAD_DEFAULT = [name for name in ("mnasnet0_5", "vit_b_32") if name in ALL]
RELOAD_SLOW = [name for name in ALL if name not in RELOAD_DEFAULT]


def _id(case):
    return f"{case[0]}-{case[1][0]}"


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _prune(model, shape, criterion, target):
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, *shape, generator=generator), torch.randint(0, 10, (2,), generator=generator))]
    example = torch.randn(1, *shape, generator=generator)
    return prune(model, PruneConfig(criterion=criterion, target_macs=target, scope="global"), batches,
                 example_inputs=example)


def _check(name: str, settings) -> list[str]:
    """Prune a fresh ``name`` in each setting; returns "pruned" or "refused" per setting (asserting each)."""
    outcomes = []
    model, shape = build_torchvision(name)
    before = _state(model)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    for criterion, target in settings:
        try:
            result = _prune(model, shape, criterion, target)
        except UserError as error:
            message = str(error)
            assert "\n" not in message and " at 0x" not in message, message
            with pytest.raises(UserError) as again:
                _prune(model, shape, criterion, target)
            assert str(again.value) == message  # the same words every run
            outcomes.append("refused")
            continue
        with torch.no_grad():
            assert result.model(x).shape == expected.shape
        assert result.macs_after <= target * result.macs_before * (1 + 1e-3)
        assert result.macs_after < result.macs_before
        outcomes.append("pruned")
    after = _state(model)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    return outcomes


def test_the_default_third_covers_every_family():
    if not ALL:
        pytest.skip("torchvision is not installed")
    from .thirdparty import family

    assert {family(n) for n in DEFAULT} == {family(n) for n in ALL}
    assert len(ALL) / 3 <= len(DEFAULT) < len(ALL) / 2


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=_id)
def test_torchvision_builder_prunes(case):
    assert _check(case[0], [case[1]]) in (["pruned"], ["refused"])  # refused = one stable line


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=_id)
def test_torchvision_builder_prunes_full_list(case):
    assert _check(case[0], [case[1]]) in (["pruned"], ["refused"])  # refused = one stable line


def test_stochastic_depth_leaves_the_residual_channels_prunable():
    if not ALL:
        pytest.skip("torchvision is not installed")
    from torchslim.prune import build_graph

    model, shape = build_torchvision("efficientnet_b0")
    graph = build_graph(model, torch.randn(1, *shape))
    assert graph.boundaries == []
    # the two blocks of stage 2 add their outputs: one group holds both projections
    members = [{m.module for m in g.members} for g in graph.groups]
    assert any({"features.2.0.block.3.0", "features.2.1.block.3.0"} <= names for names in members)


def _reload_failure(name: str):
    """None when the l2-pruned builder reloads bit-identically in a fresh process, else why not."""
    model, shape = build_source(f"torchvision:{name}")
    result = _prune(model, shape, "l2", 0.5)
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(4))
    with tempfile.TemporaryDirectory() as folder:
        return reload_in_fresh_process(result.model, example, folder)


@pytest.mark.parametrize("name", RELOAD_DEFAULT)
def test_pruned_builder_reloads_bit_identical_in_a_fresh_process(name):
    assert _reload_failure(name) is None


@pytest.mark.slow
@pytest.mark.parametrize("name", RELOAD_SLOW)
def test_pruned_builder_reloads_bit_identical_full_list(name):
    assert _reload_failure(name) is None
