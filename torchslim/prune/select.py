"""Which channels to remove: per-layer uniform, global ranking, or cost-aware greedy.

* ``layer``: every group loses the same share of its channels (the lowest-scored ones);
  with a MAC or parameter target the share is found by bisection.
* ``global``: scores are divided by their group's mean, then ranked across groups; the
  lowest are removed until the target is met.
* ``greedy``: OICSR's global greedy selection made cost-aware: each step removes the
  channel with the lowest normalised importance per MAC (or parameter) it saves.

With a latency target (``target_latency``, a share of the measured latency kept), the
cost model carries measured per-layer latency tables (:mod:`.latency`): the stop test
uses the predicted latency, and greedy ranks importance per millisecond saved, so it
takes channels where the runtime spends the most time per unit of importance.

With both a MAC and a parameter target, both must be met.  The global scope then ranks
``score / density ** beta``, where ``density`` is the parameters one channel of the group
costs, and bisects ``beta`` to the smallest value whose MAC-target selection also meets
the parameter target: beta = 0 is the plain ranking; larger values take more channels
from parameter-dense layers (the deep, low-resolution ones), which cost few MACs.  The
layer scope takes the smallest uniform share meeting both; greedy counts both savings.

All three keep at least ``min_channels`` per group, never touch ignored layers, and
round the channels kept per group to a multiple of ``round_to``.  MACs and parameters are
predicted exactly (conv and linear costs are bilinear in the channel counts) from the
per-layer counts of :func:`torchslim.profile.count_macs`.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserError
from ..profile import count_macs, count_params

__all__ = ["CostModel", "select_channels", "predicted_state", "SCOPES"]

SCOPES = ("layer", "global", "greedy")


class CostModel:
    """MACs and parameters of the model as functions of the positions removed per member."""

    def __init__(self, model: nn.Module, graph, input_shape):
        total, per_layer = count_macs(model, input_shape, per_layer=True)
        if getattr(graph, "macs_owners", None):
            per_layer = _attribute(model, input_shape, per_layer, graph.macs_owners)
        self.total_params = count_params(model)
        self.total_macs = total
        self.sizes = {key: len(m.slots) for key, m in graph.members.items()}
        self.modules = {}
        for name in {key[0] for key in graph.members}:
            module = model.get_submodule(name)
            wide = sum(p.numel() for p in module.parameters(recurse=False) if p.ndim >= 2)
            narrow = sum(p.numel() for p in module.parameters(recurse=False) if p.ndim < 2)
            self.modules[name] = (per_layer.get(name, 0), wide, narrow)
        self.fixed_macs = total - sum(m[0] for m in self.modules.values())
        self.fixed_params = self.total_params - sum(m[1] + m[2] for m in self.modules.values())
        self.latency = None  # a latency.LatencyModel, for a latency target

    @property
    def total_ms(self) -> float:
        return self.latency.base_ms if self.latency is not None else 0.0

    def module_cost(self, name: str, removed: dict) -> tuple[float, float, float]:
        """MACs, parameters and predicted milliseconds (0 without a latency model)."""
        macs, wide, narrow = self.modules[name]
        frac_out = frac_in = 1.0
        kept_in = kept_out = None
        if (name, "out") in self.sizes:
            kept_out = self.sizes[(name, "out")] - removed.get((name, "out"), 0)
            frac_out = kept_out / self.sizes[(name, "out")]
        if (name, "in") in self.sizes:
            kept_in = self.sizes[(name, "in")] - removed.get((name, "in"), 0)
            frac_in = kept_in / self.sizes[(name, "in")]
        narrow_frac = frac_out if (name, "out") in self.sizes else 1.0
        ms = self.latency.layer_ms(name, kept_in, kept_out) if self.latency is not None else 0.0
        return macs * frac_in * frac_out, wide * frac_in * frac_out + narrow * narrow_frac, ms


@torch.no_grad()
def _attribute(model, input_shape, per_layer: dict, owners: dict) -> dict:
    """Leaf counts plus the MACs counted in an owner module itself (functional attention on
    its layers' weights), shared among its member modules by weight size.  The share is an
    estimate (the attention products scale with one width, the projections with two):
    :func:`torchslim.prune.prune` re-aims when the cut model misses the MAC target."""
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    counts, root = counter.get_flop_counts(), type(model).__name__
    result = dict(per_layer)
    for owner, names in owners.items():
        inside = sum(v for k, v in per_layer.items() if k.startswith(owner + "."))
        own = sum(counts.get(f"{root}.{owner}", {}).values()) // 2 - inside
        sizes = [sum(p.numel() for p in model.get_submodule(n).parameters()) for n in names]
        for name, size in zip(names, sizes):
            result[name] = result.get(name, 0) + own * size / max(sum(sizes), 1)
    return result


class _State:
    """Positions removed so far, with the predicted totals kept up to date."""

    def __init__(self, cost: CostModel):
        self.cost = cost
        self.removed: dict = {}
        self.per_module = {name: cost.module_cost(name, {}) for name in cost.modules}
        self.macs = cost.fixed_macs + sum(v[0] for v in self.per_module.values())
        self.params = cost.fixed_params + sum(v[1] for v in self.per_module.values())
        self.ms = cost.total_ms  # measured base latency, less the tables' predicted savings

    def delta(self, group, unit: int) -> tuple[float, float, float]:
        trial = dict(self.removed)
        names = set()
        for member, positions in zip(group.members, group.positions):
            key = (member.module, member.role)
            trial[key] = trial.get(key, 0) + len(positions[unit])
            names.add(member.module)
        dm = dp = dms = 0.0
        for name in names:
            new = self.cost.module_cost(name, trial)
            dm += self.per_module[name][0] - new[0]
            dp += self.per_module[name][1] - new[1]
            dms += self.per_module[name][2] - new[2]
        return dm, dp, dms

    def remove(self, group, unit: int) -> None:
        names = set()
        for member, positions in zip(group.members, group.positions):
            key = (member.module, member.role)
            self.removed[key] = self.removed.get(key, 0) + len(positions[unit])
            names.add(member.module)
        for name in names:
            old, new = self.per_module[name], self.cost.module_cost(name, self.removed)
            self.macs += new[0] - old[0]
            self.params += new[1] - old[1]
            self.ms += new[2] - old[2]
            self.per_module[name] = new


def _ignored(group, patterns) -> bool:
    for member in group.members:
        for pattern in patterns:
            if fnmatch.fnmatchcase(member.module, pattern) or member.module.startswith(pattern + "."):
                return True
    return False


def _floor_keep(size: int, min_channels: int) -> int:
    return min(size, max(1, min_channels))


def _round_keep(keep: int, size: int, multiple: int, floor: int) -> int:
    if multiple <= 1 or keep >= size:
        return max(keep, floor)
    rounded = max(multiple, int(math.floor(keep / multiple + 0.5)) * multiple)
    return min(size, max(rounded, floor))


class _Selection:
    def __init__(self, groups, scores, cost, config):
        self.groups, self.cost, self.config = groups, cost, config
        self.prunable = [i for i, g in enumerate(groups) if not _ignored(g, config.ignored_layers)
                         and len(g) > _floor_keep(len(g), config.min_channels)]
        self.order = {i: torch.argsort(scores[i], stable=True).tolist() for i in range(len(groups))}
        self.normalised = {}
        for i, s in enumerate(scores):
            # Mean-normalised: a layer of uniform importance is pruned like any other,
            # whatever its size (an L2 norm would favour pruning the widest layers).
            mean = s.mean() if len(s) else s.new_zeros(())
            self.normalised[i] = (s / mean if mean > 0 else s).tolist()
        self.total_units = sum(len(groups[i]) for i in self.prunable)
        self.target_latency = getattr(config, "target_latency", None)
        if self.target_latency is not None and cost.latency is None:
            raise ValueError("a latency target needs cost.latency (a measured LatencyModel)")

    def floor(self, i: int) -> int:
        return _floor_keep(len(self.groups[i]), self.config.min_channels)

    def evaluate(self, removed_counts: dict) -> _State:
        """Remove the lowest-scored ``removed_counts[i]`` units of each group."""
        state = _State(self.cost)
        for i, count in removed_counts.items():
            for unit in self.order[i][:count]:
                state.remove(self.groups[i], unit)
        return state

    def met(self, state: _State, removed_units: int, slack: float = 0.0, macs_only: bool = False) -> bool:
        c = self.config
        if c.ratio is not None:
            return removed_units >= c.ratio * self.total_units - 1e-9 - slack * self.total_units
        macs_met = c.target_macs is None or state.macs <= (c.target_macs - slack) * self.cost.total_macs
        if macs_only and c.target_macs is not None:
            return macs_met
        return macs_met and (c.target_params is None
                             or state.params <= (c.target_params - slack) * self.cost.total_params) and \
            (self.target_latency is None or state.ms <= (self.target_latency - slack) * self.cost.total_ms)

    def saved(self, state: _State, dm: float, dp: float, dms: float = 0.0) -> float:
        """The share of the unmet targets that removing a channel saves (greedy's cost)."""
        c = self.config
        if c.ratio is not None:
            return 1.0 / self.total_units
        value = 0.0
        if c.target_macs is not None and state.macs > c.target_macs * self.cost.total_macs:
            value += dm / self.cost.total_macs
        if c.target_params is not None and state.params > c.target_params * self.cost.total_params:
            value += dp / self.cost.total_params
        if self.target_latency is not None and state.ms > self.target_latency * self.cost.total_ms:
            value += dms / self.cost.total_ms
        return value

    def weighted(self, beta: float) -> dict:
        """Normalised scores divided by the group's parameters per channel to the ``beta``."""
        if beta == 0:
            return self.normalised
        empty = _State(self.cost)
        out = {}
        for i in self.prunable:
            density = max(empty.delta(self.groups[i], 0)[1], 1.0) / max(self.cost.total_params, 1)
            out[i] = [v / density ** beta for v in self.normalised[i]]
        return out

    def rounded(self, counts: dict) -> dict:
        out = {}
        for i, count in counts.items():
            size = len(self.groups[i])
            keep = _round_keep(size - count, size, self.config.round_to, self.floor(i))
            out[i] = size - keep
        return out


def _layer(sel: _Selection) -> dict:
    c = sel.config

    def counts(share: float) -> dict:
        result = {}
        for i in sel.prunable:
            size = len(sel.groups[i])
            keep = _round_keep(int(round(size * (1 - share))), size, c.round_to, sel.floor(i))
            result[i] = size - keep
        return result

    if c.ratio is not None:
        return counts(c.ratio)
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        plan = counts(mid)
        if sel.met(sel.evaluate(plan), sum(plan.values())):
            high = mid
        else:
            low = mid
    return counts(high)


def _ranked(sel: _Selection, slack: float, greedy: bool, beta: float = 0.0, macs_only: bool = False) -> dict:
    state = _State(sel.cost)
    removed = {i: 0 for i in sel.prunable}
    total = 0
    if not greedy:
        keys = sel.weighted(beta)
        queue = sorted((keys[i][u], i, rank) for i in sel.prunable for rank, u in enumerate(sel.order[i]))
        queue_pos = 0
    while not sel.met(state, total, slack, macs_only):
        if greedy:
            best = None
            for i in sel.prunable:
                if len(sel.groups[i]) - removed[i] <= sel.floor(i):
                    continue
                unit = sel.order[i][removed[i]]
                value = sel.normalised[i][unit] / max(sel.saved(state, *state.delta(sel.groups[i], unit)), 1e-12)
                if best is None or value < best[0]:
                    best = (value, i, unit)
            if best is None:
                break
            _, i, unit = best
        else:
            while queue_pos < len(queue):
                _, i, rank = queue[queue_pos]
                queue_pos += 1
                if rank == removed[i] and len(sel.groups[i]) - removed[i] > sel.floor(i):
                    break
            else:
                break
            unit = sel.order[i][removed[i]]
        state.remove(sel.groups[i], unit)
        removed[i] += 1
        total += 1
    return removed


def _beta(sel: _Selection, slack: float, high: float = 4.0, steps: int = 12) -> float:
    """The smallest density exponent whose MAC-target ranking also meets the parameter
    target (``high`` when none does)."""
    c = sel.config
    if c.target_macs is None or c.target_params is None:
        return 0.0

    def params_met(beta: float) -> bool:
        counts = _ranked(sel, slack, False, beta, macs_only=True)
        return sel.evaluate(counts).params <= (c.target_params - slack) * sel.cost.total_params

    if params_met(0.0):
        return 0.0
    if not params_met(high):
        return high
    low = 0.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if params_met(mid) else (mid, high)
    return high


def _refill(sel: _Selection, counts: dict, keys: dict) -> dict:
    """Give back whole multiples of ``round_to`` channels while every target stays met.

    Rounding the kept channels (and the slack it needs) overshoots the target; each step
    restores the block of channels next in line for removal with the highest mean score."""
    multiple = sel.config.round_to
    counts = dict(counts)
    while True:
        best = None
        for i, count in counts.items():
            if count == 0:
                continue
            size = len(sel.groups[i])
            keep = min(size, _round_keep(size - count, size, multiple, sel.floor(i)) + multiple)
            trial = {**counts, i: size - keep}
            if not sel.met(sel.evaluate(trial), sum(trial.values())):
                continue
            restored = sel.order[i][size - keep:count]
            value = sum(keys[i][u] for u in restored) / len(restored)
            if best is None or value > best[0]:
                best = (value, trial)
        if best is None:
            return counts
        counts = best[1]


def select_channels(groups, scores, cost: CostModel, config) -> tuple[set, dict]:
    """The channel units to remove (graph roots) and the number removed per group index."""
    sel = _Selection(groups, scores, cost, config)
    if config.scope == "layer":
        counts = _layer(sel)
    else:
        greedy = config.scope == "greedy"
        slack = 0.0
        for _ in range(25):
            beta = 0.0 if greedy else _beta(sel, slack)
            counts = sel.rounded(_ranked(sel, slack, greedy, beta))
            state = sel.evaluate(counts)
            if config.round_to <= 1 or sel.met(state, sum(counts.values())):
                break
            slack += 0.005
        if config.round_to > 1:
            counts = _refill(sel, counts, sel.weighted(beta) if not greedy else sel.normalised)
    state = sel.evaluate(counts)
    if config.ratio is None and not sel.met(state, sum(counts.values()), slack=-1e-6):
        macs_missed = config.target_macs is not None and state.macs > config.target_macs * cost.total_macs * (1 + 1e-6)
        params_missed = config.target_params is not None and \
            state.params > config.target_params * cost.total_params * (1 + 1e-6)
        what, reached = (("MACs", state.macs / cost.total_macs) if macs_missed else
                         ("parameters", state.params / cost.total_params) if params_missed else
                         ("latency", state.ms / cost.total_ms))
        error = UserError(f"cannot reach the {what} target: the most this model can be pruned with "
                          f"min_channels={config.min_channels} and round_to={config.round_to} "
                          f"reaches {reached:.3f}")
        error.reached = (what, reached)
        raise error
    removed = {groups[i].units[u] for i, count in counts.items() for u in sel.order[i][:count]}
    return removed, {i: counts.get(i, 0) for i in range(len(groups))}


def predicted_state(groups, scores, cost: CostModel, config, counts: dict) -> _State:
    """MACs, parameters and latency the cost model predicts after removing ``counts``
    (as :func:`select_channels` returns them)."""
    return _Selection(groups, scores, cost, config).evaluate(counts)
