"""Teachers: an offline frozen network, and the ``loss_fn`` hook of :func:`torchslim.train.fit`.

:func:`kd_loss_fn` is the integration point every fine-tune step uses::

    loss_fn = kd_loss_fn(original_model, temperature=4.0, alpha=0.9)
    fit(pruned_model, train_set, config, loss_fn=loss_fn)

The teacher is frozen *in place* (``requires_grad_(False)``, ``eval()``), runs
under ``torch.no_grad()`` and follows the batch to its device.  Pass a copy if
the caller still wants to train it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .losses import check_kd_args, get_loss

__all__ = ["freeze_teacher", "FrozenTeacher", "KDLoss", "kd_loss_fn", "ClassMismatch", "check_same_classes"]


def freeze_teacher(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with every parameter's ``requires_grad`` off; returns it."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper, or the model itself."""
    return getattr(model, "module", model)


def _check_not_shared(student: nn.Module, teacher: nn.Module) -> None:
    teacher_ids = {id(p) for p in teacher.parameters()}
    if any(id(p) in teacher_ids for p in student.parameters()):
        raise ValueError(
            "the teacher shares parameters with the model being trained; pass a copy "
            "(copy.deepcopy(model)) as the teacher"
        )


class ClassMismatch(UserError, ValueError):
    """Teacher and student logits differ: a one-line error in the CLI, a ValueError to library callers."""


def check_same_classes(teacher_shape, student_shape, teacher_name: str = "the teacher") -> None:
    """Raise :class:`ClassMismatch` naming both class counts unless the two logit shapes agree."""
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if teacher_shape == student_shape:
        return
    if teacher_shape[-1:] != student_shape[-1:]:
        found = f"predicts {teacher_shape[-1]} classes but the student {student_shape[-1]}"
    else:  # same class count, other dimensions differ
        found = f"gives {teacher_shape} logits but the student {student_shape}"
    raise ClassMismatch(f"{teacher_name} {found}: they must predict the same classes")


class FrozenTeacher:
    """An offline teacher: frozen, in eval mode, evaluated without gradients.

    ``cache`` (a :class:`torchslim.distill.cache.LogitCache`) is consulted before
    running the network; see that class for when a cache is valid.
    """

    def __init__(self, model: nn.Module, cache=None):
        self.model = freeze_teacher(model)
        self.cache = cache
        self._device = None

    def to(self, device) -> "FrozenTeacher":
        device = torch.device(device)
        if self._device != device:
            self.model.to(device)
            self._device = device
        return self

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the normalised batch ``x`` (no graph, same device as ``x``)."""
        if self.model.training:  # a caller may have flipped it back; a teacher never trains
            self.model.eval()
        if self.cache is not None:
            return self.cache.lookup(x, self._live)
        return self._live(x)

    def flush(self) -> None:
        """Persist new cache entries (no-op without a cache)."""
        if self.cache is not None:
            self.cache.flush()

    def _live(self, x: torch.Tensor) -> torch.Tensor:
        self.to(x.device)
        return self.model(x).float()


class KDLoss:
    """``loss_fn(model, x, y) -> (loss, student_logits)`` for :func:`torchslim.train.fit`."""

    def __init__(self, teacher, temperature: float | None = None, alpha: float | None = None,
                 loss: str = "hinton", cache=None):
        self.loss = get_loss(loss)
        temperature = self.loss.default_temperature if temperature is None else temperature
        alpha = self.loss.default_alpha if alpha is None else alpha
        self.temperature, self.alpha = check_kd_args(temperature, alpha)
        self.teacher = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher, cache=cache)
        self._checked = set()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if id(model) not in self._checked:
            _check_not_shared(_unwrap(model), self.teacher.model)
            self._checked.add(id(model))
        student_logits = model(x)
        teacher_logits = self.teacher.logits(x)
        check_same_classes(teacher_logits.shape, student_logits.shape)
        loss = self.loss(student_logits, teacher_logits.to(student_logits.dtype), y, self.temperature, self.alpha)
        return loss, student_logits

    def flush(self) -> None:
        self.teacher.flush()

    def __repr__(self) -> str:
        return f"KDLoss(loss={self.loss.name!r}, temperature={self.temperature}, alpha={self.alpha})"


def kd_loss_fn(teacher: nn.Module, temperature: float | None = None, alpha: float | None = None,
               loss: str = "hinton", cache=None):
    """A distillation ``loss_fn(model, x, y) -> (loss, logits)`` for :func:`torchslim.train.fit`.

    ``teacher`` is frozen in place and moved to each batch's device;
    ``alpha`` is the teacher's share of the loss (0 = labels only), ``loss``
    one of :func:`torchslim.distill.list_losses` (``hinton``, ``mxnet``, ``tf``);
    ``temperature`` / ``alpha`` left as None take that loss's defaults
    (hinton: ``T = 4, alpha = 0.9``).  ``cache`` is an optional
    :class:`torchslim.distill.cache.LogitCache`.
    Raises ``UserError`` for ``temperature <= 0`` or ``alpha`` outside [0, 1].
    """
    return KDLoss(teacher, temperature=temperature, alpha=alpha, loss=loss, cache=cache)
