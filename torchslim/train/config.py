"""Training configuration: a plain dataclass, the single vocabulary of CLI flags and recipes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
SEED_MAX = 2**32 - 1


@dataclass
class TrainConfig(ConfigMixin):
    option_kind = "training option"

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    step_size: int = 30  # epochs between decays for the step schedule
    gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise UserError(
                f"need epochs >= 0, batch_size >= 1 and lr > 0 (got {self.epochs}, {self.batch_size}, {self.lr})"
            )
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check_ranges(self)


# field -> (test, what a good value is): plain numbers, so an impossible one is refused by
# the library as well as by the CLI and recipes
_RANGES = {
    "lr": (lambda v: math.isfinite(v), "a finite number > 0"),
    "weight_decay": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "step_size": (lambda v: v >= 1, "an integer >= 1"),
    "seed": (lambda v: 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}]"),
}


def _check_ranges(config: TrainConfig) -> None:
    for name, (good, what) in _RANGES.items():
        value = getattr(config, name)
        if not good(value):
            raise UserError(f"{name.replace('_', '-')} must be {what}, got {value!r}")


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``."""
    total = max(1, config.epochs * steps_per_epoch)
    progress = min(step / total, 1.0)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "onecycle":  # linear warm-up over 15%, then cosine to ~0
        warm = 0.15
        if progress < warm:
            return 0.04 + 0.96 * progress / warm
        return 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm)))
    if config.schedule == "step":
        return config.gamma ** (step // max(1, config.step_size * steps_per_epoch))
    return 1.0
