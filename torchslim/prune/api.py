"""``prune(model, PruneConfig(...), data)``: plan on a copy, then cut the copy.

The caller's model is never modified: tracing, scoring (which runs backward passes for
the gradient criteria), selection and surgery all work on a deep copy, so an error at
any point leaves the original exactly as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import record_meta
from ..profile import count_params
from ..profile.hardware import OtherLoad
from ..train.batchnorm import recalibrate_batchnorm
from .defaults import AUTO, round_to_for
from .criteria import Context, get_criterion, score_groups
from .graph import build_graph
from .latency import measure_models_ms, measure_tables
from .select import SCOPES, CostModel, predicted_state, select_channels
from .surgery import apply_removal
from ..data.calibration import calibration_pairs
from .latency import RUNTIMES

__all__ = ["PruneConfig", "PruneResult", "prune", "remove_channels"]


def _fraction(name, value, upper_open: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a number, got {value!r}")
    if upper_open and not 0 <= value < 1:
        raise UserError(f"{name} must be in [0, 1) (the share of channels removed), got {value}")
    if not upper_open and not 0 < value <= 1:
        raise UserError(f"{name} must be in (0, 1] (the share kept), got {value}")


@dataclass
class PruneConfig(ConfigMixin):
    """What to prune and how much.

    Give ``ratio`` (share of prunable channels removed, in [0, 1)), or any of
    ``target_macs``, ``target_params`` and ``target_latency`` (shares kept, in (0, 1]; all
    given are met; with MACs and parameters the global scope shifts pruning towards the
    parameter-dense layers just enough to meet the parameter target).  A latency target
    is a share of the model's batch-1 latency on ``latency_runtime`` ("torch" eager or
    "ort", ONNX Runtime) with ``latency_threads`` threads, predicted from per-layer
    tables measured on this machine (:mod:`.latency`); pair it with ``scope="greedy"``
    to spend the cut where the runtime spends its time.  ``round_to`` keeps a multiple of
    that many channels per group; ``"auto"`` takes the multiple measured fastest for
    ``latency_runtime`` on this CPU (:mod:`.defaults`), halved where the target needs it.
    ``ignored_layers`` are module names or glob patterns whose
    channels are left alone.  ``group_importance``: the weight criteria (l1, l2) sum over
    every layer of a coupled group (producing filters, BatchNorm scales and the consumers'
    input slices); False scores the producing filters only.  ``recalibrate_bn``: when
    calibration data is given, the pruned model's BatchNorm statistics are re-estimated
    on ``calibration_batches`` batches.
    """

    option_kind = "pruning option"

    criterion: str = "l1"
    ratio: float | None = None
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    latency_runtime: str = "torch"
    latency_threads: int = 1
    scope: str = "global"
    min_channels: int = 1
    round_to: int | str = 1  # "auto": the runtime's channel block on this CPU (see .defaults)
    auto_round_to: bool = False  # set when round_to came from "auto": halved if the target needs it
    ignored_layers: tuple = ()
    calibration_batches: int = 8
    batch_size: int = 64
    seed: int = 0
    strict: bool = False
    group_importance: bool = True
    recalibrate_bn: bool = True

    def __post_init__(self):
        get_criterion(self.criterion)
        if self.scope not in SCOPES:
            raise unknown_choice("scope", self.scope, SCOPES)
        _fraction("ratio", self.ratio, True)
        _fraction("target_macs", self.target_macs, False)
        _fraction("target_params", self.target_params, False)
        _fraction("target_latency", self.target_latency, False)
        if self.ratio is not None and self.has_target:
            raise UserError("give either ratio or targets (target_macs, target_params, target_latency), not both")
        if self.latency_runtime not in RUNTIMES:
            raise unknown_choice("latency runtime", self.latency_runtime, RUNTIMES)
        if self.round_to == AUTO:
            self.round_to, self.auto_round_to = round_to_for(self.latency_runtime), True
        for name in ("group_importance", "recalibrate_bn", "strict", "auto_round_to"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("min_channels", "round_to", "calibration_batches", "batch_size", "latency_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        self.ignored_layers = tuple(self.ignored_layers or ())

    @property
    def has_target(self) -> bool:
        return self.target_macs is not None or self.target_params is not None or self.target_latency is not None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ignored_layers"] = list(self.ignored_layers)
        return data


@dataclass
class PruneResult:
    """The pruned model (a new object) and what happened to it."""

    model: nn.Module
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels: list = field(default_factory=list)  # [{"group", "layers", "before", "after"}]
    boundaries: list = field(default_factory=list)
    bn_recalibrated: int = 0  # BatchNorm layers whose statistics were re-estimated
    # With a latency target: {"runtime", "threads", "target", "before_ms", "after_ms", "predicted_ms",
    # "speedup", "attempts", "other_cores"}; before and after measured in one interleaved run;
    # other_cores: how many cores other processes kept busy meanwhile (None if unknown).
    latency: dict | None = None
    round_to: int = 1  # the channel multiple used (an automatic one may have been halved)

    def to_dict(self) -> dict:
        return {"macs_before": self.macs_before, "macs_after": self.macs_after, "round_to": self.round_to,
                "params_before": self.params_before, "params_after": self.params_after,
                "channels": self.channels, "boundaries": self.boundaries,
                "bn_recalibrated": self.bn_recalibrated, "latency": self.latency}

    def summary(self) -> str:
        lines = [f"{'group':<32}{'channels':>14}"]
        for row in self.channels:
            lines.append(f"{row['group']:<32}{row['before']:>6} -> {row['after']:<6}")
        lines.append(f"MACs {self.macs_before:,} -> {self.macs_after:,} "
                     f"({self.macs_after / max(self.macs_before, 1):.1%}); "
                     f"params {self.params_before:,} -> {self.params_after:,} "
                     f"({self.params_after / max(self.params_before, 1):.1%})")
        if self.latency:
            t = self.latency
            lines.append(f"latency ({t['runtime']}, {t['threads']} thread(s), batch 1) {t['before_ms']:.3f} ms -> "
                         f"{t['after_ms']:.3f} ms measured ({t['speedup']:.2f}x; predicted {t['predicted_ms']:.3f} ms)")
        return "\n".join(lines)



def _example(model, example_inputs) -> torch.Tensor:
    if example_inputs is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise UserError("give example_inputs: the model has no input_shape")
        example_inputs = torch.randn(1, *shape)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return example_inputs.to(device)


def _finish(model, work, graph, example, removed, counts, cost) -> PruneResult:
    for param in work.parameters():
        param.grad = None
    apply_removal(work, graph, removed)
    work.eval()
    output = next(n for n in graph.graph_module.graph.nodes if n.op == "output").args[0]
    expected = getattr(output.meta.get("tensor_meta") if hasattr(output, "meta") else None, "shape", None)
    macs_after, got = _macs_and_output(work, example[:1])
    if isinstance(got, torch.Tensor) and expected is not None and tuple(got.shape[1:]) != tuple(expected[1:]):
        raise RuntimeError(f"pruning changed the output shape from {tuple(expected)} to {tuple(got.shape)}")
    work.train(model.training)
    channels = [{"group": g.name, "layers": sorted({m.module for m in g.members}),
                 "before": len(g), "after": len(g) - counts.get(g.index, 0)} for g in graph.groups]
    return PruneResult(work, cost.total_macs, macs_after, cost.total_params,
                       count_params(work), channels, list(graph.boundaries))


@torch.no_grad()
def _macs_and_output(model, x):
    """MACs as :func:`torchslim.profile.count_macs` counts them, and the output, in one pass."""
    from torch.utils.flop_counter import FlopCounterMode  # lazy: loads only to count FLOPs

    with FlopCounterMode(display=False) as counter:
        output = model(x)
    return counter.get_total_flops() // 2, output


def prune(model: nn.Module, config: PruneConfig | None = None, data=None, *, example_inputs=None) -> PruneResult:
    """Remove the least important channels of ``model``; the result holds a new, smaller model.

    ``data`` (an ImageSet or an iterable of (x, y) batches) feeds the data criteria and, with
    ``config.recalibrate_bn``, the BatchNorm recalibration of the pruned model.  ``example_inputs``
    (default: a random batch of the model's ``input_shape``) is what the graph is traced with.
    """
    config = config or PruneConfig(ratio=0.0)
    if config.ratio is None and not config.has_target:
        raise UserError("give one of ratio, target_macs, target_params or target_latency")
    while True:
        # An automatic multiple too coarse for a narrow model (the target out of reach, or a ratio
        # that rounds to nothing) is halved, down to single channels.
        coarser = config.auto_round_to and config.round_to > 1
        try:
            result = _prune(model, example_inputs, config, data)
        except UserError as exc:
            if not (coarser and getattr(exc, "reached", None)):
                raise
        else:
            removed_none = config.ratio and all(row["before"] == row["after"] for row in result.channels)
            if not (coarser and removed_none):
                result.round_to = config.round_to
                return result
        config = dataclasses.replace(config, round_to=config.round_to // 2)


def _prune(model, example_inputs, config, data) -> PruneResult:
    criterion = get_criterion(config.criterion)
    example = _example(model, example_inputs)
    work = copy.deepcopy(model)
    graph = build_graph(work, example, strict=config.strict)
    if not graph.groups and config.ratio != 0:
        raise UserError(f"{type(model).__name__} has no prunable channels"
                        + (f"; boundaries: {'; '.join(graph.boundaries[:3])}" if graph.boundaries else ""))
    if criterion.needs_data and data is None:
        raise UserError(f"criterion {config.criterion!r} needs calibration data")
    batches = []
    if data is not None and (criterion.needs_data or config.recalibrate_bn):
        batches = calibration_pairs(data, config.calibration_batches, config.batch_size,
                                      config.seed, example.device)
    ctx = Context(work, graph, batches, config.seed, whole_group=config.group_importance)
    cost = CostModel(work, graph, tuple(example.shape[1:]))
    scores = score_groups(config.criterion, graph.groups, ctx)
    if config.target_latency is None:
        result = _prune_to_macs(model, work, graph, example, scores, cost, config)
    else:
        with OtherLoad() as load:
            cost.latency = measure_tables(work, example, cost.sizes, list(cost.modules), config.latency_runtime,
                                          config.latency_threads, config.round_to)
            result = _prune_to_latency(model, work, graph, example, scores, cost, config)
        result.latency["other_cores"] = load.cores
        if load.busy:
            warnings.warn(f"while the latency tables and the cut models were timed, {load.describe()}: "
                          "a busy machine skews batch-1 timings, so the selection may miss the target when run "
                          "alone; rerun on a quiet machine", stacklevel=2)
    if config.recalibrate_bn and batches:
        result.bn_recalibrated = recalibrate_batchnorm(result.model, batches)
    record_meta(result.model, pruned=config.to_dict())
    return result


def _prune_to_macs(model, work, graph, example, scores, cost, config, attempts: int = 6) -> PruneResult:
    """Select and cut.  Where the cost model estimates some MACs (attention computed from
    its layers' weights), the cut model is counted and the MAC target re-aimed until met."""
    if config.target_macs is None or not graph.macs_owners:
        removed, counts = select_channels(graph.groups, scores, cost, config)
        return _finish(model, work, graph, example, removed, counts, cost)
    asked = config.target_macs
    for _ in range(attempts):
        trial = dataclasses.replace(config, target_macs=asked)
        removed, counts = select_channels(graph.groups, scores, cost, trial)
        result = _finish(model, copy.deepcopy(work), graph, example, removed, counts, cost)
        share = result.macs_after / max(result.macs_before, 1)
        if share <= config.target_macs * (1 + 1e-4):
            break
        asked *= (config.target_macs / share) ** 2  # overshoot a little: each miss costs a cut
    return result


def _prune_to_latency(model, work, graph, example, scores, cost, config, attempts: int = 5,
                      tolerance: float = 0.03) -> PruneResult:
    """Select to the latency the tables predict, then measure the cut model against the
    original and re-aim the prediction until the measured share is within ``tolerance``
    of the target (tables timed layer by layer miss what a runtime does across layers,
    e.g. ONNX Runtime's layout changes).  Returns the least-pruned candidate that meets the
    target, else the fastest one, with a warning.  Where the tables put the target out of
    reach, their fastest selection is measured before the target is refused: tables timed
    layer by layer on a loaded machine overstate the fixed costs.  A re-aim never leaves the
    bracket of aims already measured to meet and to miss the target, so noisy tables cannot
    send it back to the uncut model."""
    goal, asked = config.target_latency, config.target_latency
    shape = tuple(example.shape[1:])
    met, fastest, reachable, refused = None, None, None, None
    meets, misses = 0.0, 1.0  # aims measured to meet / to miss the goal (the uncut model misses it)
    for attempt in range(1, attempts + 1):
        trial = dataclasses.replace(config, target_latency=min(1.0, asked))
        try:
            removed, counts = select_channels(graph.groups, scores, cost, trial)
        except UserError as error:
            if reachable is None and refused is None and getattr(error, "reached", ("",))[0] == "latency":
                refused, asked = error, error.reached[1] * (1 + 1e-6)  # measure the tables' fastest cut
                continue
            if reachable is None:
                raise
            asked = (asked + reachable) / 2  # re-aimed past what the tables allow: come halfway back
            continue
        reachable = asked
        predicted = predicted_state(graph.groups, scores, cost, trial, counts).ms
        result = _finish(model, copy.deepcopy(work), graph, example, removed, counts, cost)
        ms = measure_models_ms({"before": model, "after": result.model}, shape, config.latency_runtime,
                               config.latency_threads, repeats=50)
        share = ms["after"] / ms["before"]
        if refused is not None and fastest is None and share > goal * (1 + tolerance):
            raise UserError(f"{refused}; measured, the most pruned model keeps {share:.3f} of the latency")
        result.latency = {"runtime": config.latency_runtime, "threads": config.latency_threads,
                          "target": goal, "before_ms": ms["before"], "after_ms": ms["after"],
                          "predicted_ms": predicted * ms["before"] / cost.total_ms,
                          "speedup": ms["before"] / ms["after"], "attempts": attempt}
        if share <= goal * (1 + tolerance) and (met is None or share > met.latency["after_ms"] / met.latency["before_ms"]):
            met = result
        if fastest is None or share < fastest.latency["after_ms"] / fastest.latency["before_ms"]:
            fastest = result
        if abs(share - goal) <= tolerance * goal:
            break
        if share <= goal * (1 + tolerance):
            meets = max(meets, asked)
        else:
            misses = min(misses, asked)
        asked *= goal / share
        if not meets < asked < misses:  # the tables' scale is off (a loaded machine): bisect what was measured
            asked = (meets + misses) / 2
    if met is None:
        warnings.warn(f"latency target {goal:.3f} not met on {config.latency_runtime}: the fastest selection "
                      f"measured {fastest.latency['after_ms'] / fastest.latency['before_ms']:.3f} of the original",
                      stacklevel=3)
    return met or fastest


def remove_channels(model: nn.Module, selection: dict, example_inputs=None) -> PruneResult:
    """Remove exactly the channels named in ``selection``: ``{group index or name: [units]}``.

    Unit ``u`` of a group is its ``u``-th channel in the first layer producing it.
    """
    example = _example(model, example_inputs)
    work = copy.deepcopy(model)
    graph = build_graph(work, example)
    by_name = {g.name: g for g in graph.groups}
    removed, counts = set(), {}
    for key, units in selection.items():
        group = graph.groups[key] if isinstance(key, int) else by_name.get(key)
        if group is None:
            raise unknown_choice("channel group", str(key), by_name)
        units = sorted(set(int(u) for u in units))
        if units and (units[0] < 0 or units[-1] >= len(group) or len(units) >= len(group)):
            raise UserError(f"group {group.name} has {len(group)} channels; cannot remove {units}")
        removed.update(group.units[u] for u in units)
        counts[group.index] = len(units)
    cost = CostModel(work, graph, tuple(example.shape[1:]))
    return _finish(model, work, graph, example, removed, counts, cost)
