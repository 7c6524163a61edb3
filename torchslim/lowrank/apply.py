"""``factorize(model, LowRankConfig(...))``: low-rank layers chosen by energy or a MAC target.

Methods (``LOWRANK_METHODS``, a registry): ``svd`` factorises Linear layers by truncated
SVD and ``k x k`` convs by spatial SVD; ``tucker`` uses Tucker-2 for the convs
(and SVD for Linear layers).  The rank of each layer is the smallest that keeps
``energy`` of its squared singular values.  With ``target_macs`` (a fraction of
the model's MACs) one energy level is searched for all layers so the
factorised model meets the target.  A layer is only replaced when that lowers
its MACs.  The caller's model is untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import Registry, record_meta, set_submodule
from . import decompose as dec
from ..profile import count_macs
from ..sparse.magnitude import prunable_layers

LOWRANK_METHODS = Registry("low-rank method")


def register_method(name: str, conv_rule, linear_rule):
    LOWRANK_METHODS[name] = (conv_rule, linear_rule)


@dataclass
class LowRankConfig(ConfigMixin):
    option_kind = "low-rank option"

    method: str = "svd"  # svd | tucker
    energy: float | None = 0.9  # fraction of squared singular values kept per layer
    target_macs: float | None = None  # fraction of the model's MACs to keep (overrides energy)
    exclude: tuple = ()
    linear: bool = True
    conv: bool = True

    def __post_init__(self):
        if self.method not in LOWRANK_METHODS:
            raise unknown_choice("low-rank method", self.method, LOWRANK_METHODS)
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise UserError(f"target_macs must be a fraction in (0, 1), got {self.target_macs}")
        if self.target_macs is None and (self.energy is None or not 0 < self.energy <= 1):
            raise UserError(f"energy must be in (0, 1], got {self.energy}")
        self.exclude = tuple(self.exclude)


class _Candidate:
    """One layer with its spectra and a MAC model for any rank."""

    def __init__(self, path, layer, rule, in_hw, out_hw):
        self.path, self.layer, self.rule = path, layer, rule
        self.in_hw, self.out_hw = in_hw, out_hw
        self.spectra = rule["spectra"](layer)

    def ranks(self, energy: float) -> tuple:
        return tuple(dec.energy_rank(s, energy) for s in self.spectra)

    def macs(self) -> int:
        return self.rule["macs"](self.layer, None, self.in_hw, self.out_hw)

    def macs_at(self, ranks) -> int:
        return self.rule["macs"](self.layer, ranks, self.in_hw, self.out_hw)

    def build(self, ranks) -> nn.Module:
        return self.rule["build"](self.layer, *ranks)


def _linear_macs(layer, ranks, in_hw, out_hw):
    return layer.in_features * layer.out_features if ranks is None else ranks[0] * (layer.in_features
                                                                                  + layer.out_features)


def _conv_macs_dense(layer, out_hw):
    kh, kw = layer.kernel_size
    return layer.out_channels * layer.in_channels // layer.groups * kh * kw * out_hw[0] * out_hw[1]


def _spatial_macs(layer, ranks, in_hw, out_hw):
    if ranks is None:
        return _conv_macs_dense(layer, out_hw)
    (rank,), (kh, kw) = ranks, layer.kernel_size
    vertical_width = in_hw[1]  # no horizontal stride/padding in the k x 1 conv
    return (rank * layer.in_channels * kh * out_hw[0] * vertical_width
            + layer.out_channels * rank * kw * out_hw[0] * out_hw[1])


def _tucker_macs(layer, ranks, in_hw, out_hw):
    if ranks is None:
        return _conv_macs_dense(layer, out_hw)
    rank_out, rank_in = ranks
    kh, kw = layer.kernel_size
    pixels_out = out_hw[0] * out_hw[1]
    return (rank_in * layer.in_channels * in_hw[0] * in_hw[1] + rank_out * rank_in * kh * kw * pixels_out
            + layer.out_channels * rank_out * pixels_out)


SVD_LINEAR = {"applies": lambda m: isinstance(m, nn.Linear), "spectra": lambda m: (dec.linear_spectrum(m),),
              "macs": _linear_macs, "build": dec.svd_linear}
SPATIAL = {"applies": dec.spatial_svd_supported, "spectra": lambda m: (dec.spatial_spectrum(m),),
           "macs": _spatial_macs, "build": dec.spatial_svd_conv}
TUCKER = {"applies": lambda m: dec.tucker2_supported(m) and min(m.kernel_size) > 1, "spectra": dec.tucker_spectra,
          "macs": _tucker_macs, "build": dec.tucker2_conv}
register_method("svd", SPATIAL, SVD_LINEAR)
register_method("tucker", TUCKER, SVD_LINEAR)


@torch.no_grad()
def _spatial_sizes(model, paths, input_shape) -> dict:
    sizes, handles = {}, []
    for path in paths:
        def hook(_m, args, out, path=path):
            sizes[path] = (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        model.eval()(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def plan_factorization(model: nn.Module, config: LowRankConfig, input_shape) -> tuple[list, dict]:
    """``(candidates, {path: ranks})`` for the chosen energy or MAC target; changes nothing."""
    conv_rule, linear_rule = LOWRANK_METHODS[config.method]
    candidates = []
    layers = prunable_layers(model, config.exclude)
    sizes = _spatial_sizes(model, list(layers), input_shape)
    for path, layer in layers.items():
        for enabled, rule in ((config.conv, conv_rule), (config.linear, linear_rule)):
            if enabled and rule["applies"](layer):
                candidates.append(_Candidate(path, layer, rule, *sizes[path]))
                break
    if not candidates:
        raise UserError(f"no layer of the model can be factorised with method {config.method!r}")

    def choose(energy):
        chosen = {}
        for cand in candidates:
            ranks = cand.ranks(energy)
            if cand.macs_at(ranks) < cand.macs():
                chosen[cand.path] = ranks
        return chosen

    if config.target_macs is None:
        return candidates, choose(config.energy)
    total = count_macs(model, input_shape)
    budget = config.target_macs * total

    def macs_for(chosen):
        return total - sum(c.macs() - c.macs_at(chosen[c.path]) for c in candidates if c.path in chosen)

    low, high = 0.0, 1.0
    if macs_for(choose(1e-9)) > budget:
        floor = macs_for(choose(1e-9)) / total
        raise UserError(f"target_macs {config.target_macs} is out of reach: factorising every layer to rank 1 "
                        f"keeps {floor:.3f} of the MACs")
    for _ in range(40):
        middle = (low + high) / 2
        if macs_for(choose(middle)) <= budget:
            low = middle
        else:
            high = middle
    return candidates, choose(low)


def factorize(model: nn.Module, config: LowRankConfig, *, input_shape=None) -> nn.Module:
    """A factorised copy of ``model``; ``torchslim_meta["lowrank"]`` records each layer's ranks."""
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or (3, 32, 32))
    factored = copy.deepcopy(model).eval()
    candidates, chosen = plan_factorization(factored, config, input_shape)
    records = {}
    for cand in candidates:
        if cand.path not in chosen:
            continue
        set_submodule(factored, cand.path, cand.build(chosen[cand.path]))
        records[cand.path] = {"ranks": list(chosen[cand.path]), "macs_before": cand.macs(),
                              "macs_after": cand.macs_at(chosen[cand.path])}
    record_meta(factored, lowrank={"method": config.method, "config": config.to_dict(), "layers": records})
    return factored
