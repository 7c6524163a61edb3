"""Iterative pruning: rank, remove N channels, fine-tune k epochs, repeat until the target.

Each round is checkpointed in a folder (atomic writes): the pruned model before its
fine-tune, the fine-tune's own epoch checkpoint, the fine-tuned model, and ``log.json``
with one record per round (top-1, MACs, parameters and the channels removed per group).
Run the same call again after an interruption and it resumes where it stopped, with
the same result, because pruning is deterministic given the model, data and seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from torch import nn

from ..errors import UserError
from ..io import atomic_write_text
from .api import PruneConfig, PruneResult, prune
from ..profile import count_macs, count_params

__all__ = ["iterative_prune"]


def _log_path(folder):
    return os.path.join(folder, "log.json")


def _read_log(folder) -> dict:
    path = _log_path(folder)
    if not os.path.exists(path):
        return {"rounds": []}
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; delete {folder} to start over") from None


def _round_config(config: PruneConfig, macs_now: int, params_now: int, macs0: int,
                  params0: int, step_channels: int, prunable: int, share: float = 1.0) -> tuple[PruneConfig, bool]:
    """This round's config: ``step_channels`` more channels, or exactly the final target raised to
    ``share`` (``k / rounds`` for round k of a geometric schedule; 1 is the final target)."""
    if config.target_macs is None and config.target_params is None:
        raise UserError("iterative pruning needs a MAC or parameter target")
    final = dataclasses.replace(
        config,
        target_macs=None if config.target_macs is None else min(1.0, config.target_macs ** share * macs0 / macs_now),
        target_params=None if config.target_params is None
        else min(1.0, config.target_params ** share * params0 / params_now))
    if share < 1.0:
        return final, False
    if not step_channels or prunable <= 0:
        return final, True
    return dataclasses.replace(config, target_macs=None, target_params=None,
                               ratio=min(0.99, step_channels / prunable)), False


def _reached(config: PruneConfig, macs_kept: float, params_kept: float) -> bool:
    """Every target given is met (shares of the original model)."""
    return (config.target_macs is None or macs_kept <= config.target_macs * (1 + 1e-9)) and \
        (config.target_params is None or params_kept <= config.target_params * (1 + 1e-9))


def _prunable(result_channels) -> int:
    return sum(row["after"] - 1 for row in result_channels if row["after"] > 1)


def iterative_prune(model: nn.Module, config: PruneConfig, folder, finetune=None, evaluate=None,
                    step_channels: int = 0, calibration=None, example_inputs=None, max_rounds: int = 100,
                    log=print, rounds: int = 0) -> tuple[nn.Module, list]:
    """Prune ``model`` in rounds until ``config.target_macs`` (or ``target_params``) is met.

    Each round removes ``step_channels`` channels; or, with ``rounds`` = K, round k keeps
    target ** (k / K) of the original MACs (and parameters), so the target is reached in
    exactly K geometric steps.  ``finetune(model, round_index, checkpoint_path)`` trains in
    place (``fit`` with its checkpoint); ``evaluate(model) -> top1``.  Returns the final
    model and the round log.
    """
    from .. import load, save  # lazy: io loads only to checkpoint rounds

    os.makedirs(folder, exist_ok=True)
    state = _read_log(folder)
    input_shape = tuple(example_inputs.shape[1:]) if example_inputs is not None else tuple(model.input_shape)
    macs0, params0 = count_macs(model, input_shape), count_params(model)
    current = model
    if state["rounds"]:
        current = load(os.path.join(folder, f"round{len(state['rounds']):03d}.safetensors"))
    prunable = None
    for index in range(len(state["rounds"]) + 1, max_rounds + 1):
        macs_now, params_now = count_macs(current, input_shape), count_params(current)
        if _reached(config, macs_now / macs0, params_now / params0):
            break
        pruned_path = os.path.join(folder, f"round{index:03d}.pruned.safetensors")
        if os.path.exists(pruned_path):
            pruned = load(pruned_path)
            removed = json.loads(pruned.torchslim_meta.pop("round_channels", "[]"))
        else:
            if prunable is None and not rounds:
                prunable = _prunable(prune(current, dataclasses.replace(
                    config, ratio=0.0, target_macs=None, target_params=None, criterion="l1"),
                    example_inputs=example_inputs).channels)
            round_config, last = _round_config(config, macs_now, params_now, macs0, params0, step_channels,
                                               prunable, share=min(1.0, index / rounds) if rounds else 1.0)
            result: PruneResult = prune(current, round_config, calibration, example_inputs=example_inputs)
            if not last and (config.target_macs is not None and result.macs_after < config.target_macs * macs0
                             or config.target_params is not None
                             and result.params_after < config.target_params * params0):
                round_config, _ = _round_config(config, macs_now, params_now, macs0, params0, 0, 0)
                result = prune(current, round_config, calibration, example_inputs=example_inputs)
            pruned, removed = result.model, [r for r in result.channels if r["before"] != r["after"]]
            prunable = _prunable(result.channels)
            if not removed:
                raise UserError("the pruning round removed no channels; lower min_channels or round_to")
            save(pruned, pruned_path, round_channels=json.dumps(removed))
        if finetune is not None:
            finetune(pruned, index, os.path.join(folder, f"round{index:03d}.finetune.ckpt"))
        record = {"round": index, "macs": count_macs(pruned, input_shape), "params": count_params(pruned),
                  "macs_kept": count_macs(pruned, input_shape) / macs0,
                  "top1": evaluate(pruned) if evaluate is not None else None,
                  "channels_removed": {r["group"]: r["before"] - r["after"] for r in removed}}
        save(pruned, os.path.join(folder, f"round{index:03d}.safetensors"))
        state["rounds"].append(record)
        atomic_write_text(_log_path(folder), json.dumps(state, indent=1))
        for leftover in (pruned_path, os.path.join(folder, f"round{index:03d}.finetune.ckpt")):
            if os.path.exists(leftover):
                os.remove(leftover)
        if log is not None:
            top1 = "" if record["top1"] is None else f", top-1 {record['top1']:.4f}"
            log(f"round {index}: MACs {record['macs_kept']:.1%} of the original, "
                f"{sum(record['channels_removed'].values())} channels removed{top1}")
        current = pruned
    return current, state["rounds"]


def clear_rounds(folder) -> None:
    """Remove a finished run's checkpoint folder."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
