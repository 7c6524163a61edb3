"""``sparsify(model, SparsityConfig(...))``: one-shot, AGP or iterative magnitude pruning.

Schedules are registered by name (``SCHEDULES``); each takes the working copy,
its prunable layers, the config and a fine-tune callable, and leaves the copy
at the target sparsity.

* ``oneshot`` prunes to the target, then fine-tunes with the masks held.
* ``agp`` is the automated gradual pruner of Zhu & Gupta (2017): during the
  fine-tune the sparsity follows ``s_t = s_f + (s_i - s_f) (1 - t/T)^3``
  over the first ``agp_fraction`` of the steps, masks recomputed every
  ``agp_every`` steps, then the rest of the steps train at the final sparsity.
* ``iterative`` alternates prune and fine-tune for ``rounds`` rounds with the
  same cubic ramp at the round boundaries (Han et al. 2015).

The caller's model is never modified: the work happens on a deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import Registry, record_meta
from .magnitude import CRITERIA, SCOPES, MaskSet, _check_sparsity, magnitude_masks, prunable_layers
from ..train import fit

SCHEDULES = Registry("sparsity schedule")


def register_schedule(name: str):
    """Decorator: register a sparsity schedule under ``name``."""
    return SCHEDULES.register(name)


@dataclass
class SparsityConfig(ConfigMixin):
    option_kind = "sparsity option"

    sparsity: float = 0.9
    scope: str = "layer"  # layer | global
    schedule: str = "oneshot"  # oneshot | agp | iterative
    layer_sparsity: dict = field(default_factory=dict)  # {path: fraction}, overrides `sparsity`
    exclude: tuple = ()
    rounds: int = 3  # iterative
    agp_fraction: float = 0.75  # agp: share of the fine-tune steps spent ramping up
    agp_every: int = 50  # agp: steps between mask updates
    criterion: str = "magnitude"  # magnitude | folded (|w| with the following BatchNorm folded in)

    def __post_init__(self):
        _check_sparsity(self.sparsity)
        for path, value in self.layer_sparsity.items():
            _check_sparsity(value, f"sparsity of {path}")
        if self.scope not in SCOPES:
            raise unknown_choice("sparsity scope", self.scope, SCOPES)
        SCHEDULES[self.schedule], CRITERIA[self.criterion]  # noqa: B018  # an unknown name is a UserError
        if self.rounds < 1 or self.agp_every < 1 or not 0 < self.agp_fraction <= 1:
            raise UserError("need rounds >= 1, agp_every >= 1 and agp_fraction in (0, 1]")
        self.exclude = tuple(self.exclude)


    def target(self, fraction: float = 1.0):
        """The sparsity target scaled by ``fraction`` of the ramp (per layer when given)."""
        if self.layer_sparsity:
            return {p: v * fraction for p, v in self.layer_sparsity.items()}
        return self.sparsity * fraction


def cubic_ramp(progress: float) -> float:
    """Share of the final sparsity reached at ``progress`` in [0, 1] (AGP's cubic)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - progress) ** 3


def _prune(model, layers, config, fraction) -> MaskSet:
    scores = CRITERIA[config.criterion](model, layers)
    masks = MaskSet(magnitude_masks(layers, config.target(fraction), config.scope, scores))
    masks.apply(model)
    return masks


@register_schedule("oneshot")
def _oneshot(model, layers, config, finetune):
    masks = _prune(model, layers, config, 1.0)
    finetune(model, masks.on_step, 1.0)
    return masks


@register_schedule("iterative")
def _iterative(model, layers, config, finetune):
    masks = None
    for round_index in range(config.rounds):
        masks = _prune(model, layers, config, cubic_ramp((round_index + 1) / config.rounds))
        finetune(model, masks.on_step, 1.0 / config.rounds)
    return masks


class _AGPHook:
    def __init__(self, model, layers, config, total_steps):
        self.layers, self.config = layers, config
        self.ramp_steps = max(1, int(total_steps * config.agp_fraction))
        self.step = 0
        self.masks = _prune(model, layers, config, cubic_ramp(0.0))

    def __call__(self, model):
        self.step += 1
        if self.step <= self.ramp_steps and (self.step % self.config.agp_every == 0 or self.step == self.ramp_steps):
            self.masks = _prune(model, self.layers, self.config, cubic_ramp(self.step / self.ramp_steps))
        else:
            self.masks.apply(model)


@register_schedule("agp")
def _agp(model, layers, config, finetune):
    steps = finetune.total_steps(1.0)
    if steps == 0:
        return _oneshot(model, layers, config, finetune)
    hook = _AGPHook(model, layers, config, steps)
    finetune(model, hook, 1.0)
    return _prune(model, layers, config, 1.0)  # exact target even if the ramp was cut short


class _Finetune:
    """Runs :func:`torchslim.train.fit` for a share of the configured epochs."""

    def __init__(self, train_set, train_config, loss_fn, progress):
        self.train_set, self.train_config = train_set, train_config
        self.loss_fn, self.progress = loss_fn, progress

    def epochs(self, share: float) -> int:
        if self.train_set is None or self.train_config is None:
            return 0
        return max(1, int(round(self.train_config.epochs * share))) if self.train_config.epochs else 0

    def total_steps(self, share: float) -> int:
        return self.epochs(share) * (len(self.train_set) // self.train_config.batch_size)

    def __call__(self, model, on_step, share: float) -> None:

        epochs = self.epochs(share)
        if epochs:
            config = dataclasses.replace(self.train_config, epochs=epochs)
            fit(model, self.train_set, config, loss_fn=self.loss_fn, on_step=on_step, progress=self.progress)
        on_step(model)


def sparsify(model: nn.Module, config: SparsityConfig, data=None, *, train_config=None,
             loss_fn=None, progress: bool = False) -> nn.Module:
    """A pruned copy of ``model`` at ``config.sparsity`` (exact zeros, plain layers).

    With ``data`` (the training set) and ``train_config`` (a :class:`torchslim.train.TrainConfig`)
    the schedule fine-tunes with the masks held; ``loss_fn`` replaces the loss
    (e.g. distillation from the unpruned model).  Without them, pruning is one-shot.
    """
    pruned = copy.deepcopy(model)
    layers = prunable_layers(pruned, config.exclude)
    if config.layer_sparsity:
        unknown = sorted(set(config.layer_sparsity) - set(layers))
        if unknown:
            raise unknown_choice("prunable layer", unknown[0], layers)
    if not layers:
        raise UserError("the model has no Linear or Conv layer left to prune")
    SCHEDULES[config.schedule](pruned, layers, config, _Finetune(data, train_config, loss_fn, progress))
    record_meta(pruned, sparsity=config.to_dict())
    return pruned.eval()
