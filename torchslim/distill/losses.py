"""Distillation losses, looked up by name.

Every loss has the signature ``loss(student_logits, teacher_logits, labels,
temperature, alpha) -> scalar`` and is averaged over the batch.  ``alpha`` is
always the teacher's share: ``alpha = 0`` trains on the labels alone, ``alpha = 1``
on the teacher alone, whichever formulation is chosen.  ``temperature`` softens
both sets of logits; it must be > 0.

The formulations differ in how the teacher term's gradient scales with the
temperature ``T``.  With zero-mean logits and a large ``T`` (the regime Hinton
et al. analyse), the gradient of the teacher term with respect to the student's
logits behaves as ``T ** grad_power`` times a ``T``-independent quantity:

========  ==========  ==================================================
name      grad_power  why
========  ==========  ==================================================
hinton    0           the ``T^2`` factor cancels the ``1/T^2`` of the soft targets
mxnet     -2          no ``T^2`` factor: raise the mimic weight with ``T``
tf        -2          squared difference of ``s/T`` and ``t/T``
========  ==========  ==================================================

``LOSSES[name].grad_power`` holds that exponent; the tests check it.  Because
the teacher term of ``mxnet`` and ``tf`` weakens as ``T`` grows, their default
starting points are a lower ``T`` and a larger label share than Hinton's
(``T = 4, alpha = 0.9``): ``mxnet`` ``T = 2, alpha = 0.5``; ``tf`` ``T = 3``
(the source's value), ``alpha = 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..nn import Registry

__all__ = ["LOSSES", "DistillLoss", "get_loss", "register_loss", "list_losses", "check_kd_args",
           "hinton_loss", "mxnet_loss", "tf_loss"]


@dataclass(frozen=True)
class DistillLoss:
    """A registered loss: the function, its hard-label term (at ``T = 1``), its ``grad_power``
    and the ``(temperature, alpha)`` it starts from when the caller gives none."""

    name: str
    fn: Callable[..., torch.Tensor]
    hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    grad_power: int
    default_temperature: float = 4.0
    default_alpha: float = 0.9

    def __call__(self, student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
        return self.fn(student_logits, teacher_logits, labels, temperature, alpha)


LOSSES = Registry("distillation loss")


def register_loss(name: str, hard_loss, grad_power: int, temperature: float = 4.0, alpha: float = 0.9):
    """Decorator: register ``fn(s, t, y, temperature, alpha)`` as distillation loss ``name``."""

    def decorator(fn):
        if name in LOSSES:
            raise ValueError(f"distillation loss {name!r} is already registered")
        LOSSES.register(name, DistillLoss(name, fn, hard_loss, grad_power, temperature, alpha))
        return fn

    return decorator


def list_losses() -> list[str]:
    return sorted(LOSSES)


def get_loss(name: str) -> DistillLoss:
    return LOSSES[name]


def check_kd_args(temperature, alpha) -> tuple[float, float]:
    """Validate ``temperature > 0`` and ``0 <= alpha <= 1``; UserError otherwise."""
    try:
        temperature, alpha = float(temperature), float(alpha)
    except (TypeError, ValueError):
        raise UserError(f"temperature and alpha must be numbers, got {temperature!r} and {alpha!r}") from None
    if not temperature > 0 or temperature == float("inf"):
        raise UserError(f"temperature must be > 0 (typically 1 to 20), got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha (the teacher's share of the loss) must be in [0, 1], got {alpha}")
    return temperature, alpha


def _cross_entropy(student_logits, labels):
    return F.cross_entropy(student_logits, labels)


def _sigmoid_cross_entropy(student_logits, labels):
    onehot = F.one_hot(labels, student_logits.shape[1]).to(student_logits.dtype)
    return F.binary_cross_entropy_with_logits(student_logits, onehot, reduction="sum") / student_logits.shape[0]


@register_loss("hinton", hard_loss=_cross_entropy, grad_power=0)
def hinton_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    r"""Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network".

    .. math::
        L = \alpha T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)\big)
            + (1 - \alpha) \, \mathrm{CE}(s, y)

    KL is summed over classes and averaged over the batch.  The gradient of the
    first term with respect to ``s`` is ``alpha * T * (softmax(s/T) - softmax(t/T)) / N``,
    which for large ``T`` tends to ``alpha * (s - t) / (K N)`` (zero-mean logits,
    ``K`` classes): independent of ``T``, which is what the ``T^2`` is for.
    """
    hard = F.cross_entropy(student_logits, labels) if alpha < 1 else student_logits.new_zeros(())
    if alpha == 0:
        return hard
    soft_targets = F.softmax(teacher_logits / temperature, dim=1)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_student, soft_targets, reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * hard


@register_loss("mxnet", hard_loss=_cross_entropy, grad_power=-2, temperature=2.0, alpha=0.5)
def mxnet_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    r"""The MXNet formulation: a mimic softmax cross-entropy on ``s/T`` plus a hard one.

    .. math::
        L = \alpha \, \mathrm{CE}\big(\mathrm{softmax}(t/T), \mathrm{softmax}(s/T)\big)
            + (1 - \alpha) \, \mathrm{CE}(s, y)

    where the soft cross-entropy is ``-sum_k softmax(t/T)_k log softmax(s/T)_k``
    averaged over the batch, and ``alpha`` is the mimic weight.  The student's
    logits are divided by ``T`` for the mimic term only; the hard term sees the
    logits the student predicts with.  There is no ``T^2`` factor, so the
    mimic gradient ``alpha * (softmax(s/T) - softmax(t/T)) / (T N)`` shrinks as
    ``1/T^2`` for large ``T``.  The mimic term differs from Hinton's KL only by
    the teacher's entropy, a constant, so for ``T = 1`` both losses have the
    same gradient.
    """
    hard = F.cross_entropy(student_logits, labels) if alpha < 1 else student_logits.new_zeros(())
    if alpha == 0:
        return hard
    soft_targets = F.softmax(teacher_logits / temperature, dim=1)
    mimic = F.cross_entropy(student_logits / temperature, soft_targets)
    return alpha * mimic + (1 - alpha) * hard


@register_loss("tf", hard_loss=_sigmoid_cross_entropy, grad_power=-2, temperature=3.0, alpha=0.5)
def tf_loss(student_logits, teacher_logits, labels, temperature=3.0, alpha=0.9):
    r"""The TensorFlow formulation: sigmoid cross-entropy plus squared logit matching.

    .. math::
        L = \frac{1}{N} \sum_{n,k} \Big[ \lambda \, \mathrm{BCE}\big(\sigma(s_{nk}/\tau), \mathrm{onehot}(y_n)_k\big)
            + (1 - \lambda) \, \tfrac12 \big(s_{nk}/\tau - t_{nk}/\tau\big)^2 \Big],
        \qquad \lambda = 1 - \alpha

    summed over the batch and the ``K`` classes and divided by the batch size
    ``N``, with ``tau`` the temperature (the source uses 3).  ``lambda`` weighs
    the labels, so ``alpha = 1 - lambda`` keeps the meaning it has in the other
    losses.  The matching gradient is ``alpha * (s - t) / (tau^2 N)``: exactly
    ``1/tau^2``.  With ``alpha = 0`` this is the sigmoid cross-entropy of
    ``s/tau``, not the softmax cross-entropy.
    """
    scaled = student_logits / temperature
    hard = _sigmoid_cross_entropy(scaled, labels) if alpha < 1 else student_logits.new_zeros(())
    if alpha == 0:
        return hard
    match = 0.5 * (scaled - teacher_logits / temperature).pow(2).sum() / student_logits.shape[0]
    return (1 - alpha) * hard + alpha * match
