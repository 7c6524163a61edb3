"""Lightweight students: a zoo network by name, or a thin copy of the teacher's architecture.

* :func:`create_student` builds any zoo model (``mobilenetv2``, ``shufflenetv2``,
  ``lenet5``, the shallow nets ``shallow2`` / ``shallow3``...) for the teacher's
  classes and input shape;
* :func:`thin_student` builds the teacher's own architecture at another
  ``width_mult`` ("a vgg14 at width 0.125 learning from a vgg14 at 0.5").

Both raise :class:`~torchslim.errors.UserError` when the student cannot take the
teacher's input, so a bad pairing fails before any training.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import models
from ..errors import UserError

__all__ = ["LIGHTWEIGHT", "create_student", "thin_student", "teacher_signature"]

# Students the source names, plus the shallow nets; any zoo model is accepted.
LIGHTWEIGHT = ("mobilenetv2", "shufflenetv2", "lenet5", "shallow2", "shallow3")


def teacher_signature(teacher: nn.Module) -> tuple[int, tuple[int, int, int]]:
    """``(num_classes, (C, H, W))`` of a zoo-built or loaded teacher."""
    arch = getattr(teacher, "torchslim_arch", None) or {}
    kwargs = arch.get("kwargs", {})
    shape = getattr(teacher, "input_shape", None)
    num_classes = kwargs.get("num_classes")
    if shape is None or num_classes is None:
        raise UserError(f"{type(teacher).__name__} does not record its classes and input shape; "
                        "build it with torchslim.models.create or load it with torchslim.load")
    return int(num_classes), tuple(int(v) for v in shape)


def _check_fits(student: nn.Module, name: str, input_shape) -> nn.Module:
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            student(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        shape = "x".join(map(str, input_shape))
        raise UserError(f"student {name} cannot take the teacher's input {shape} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    student.train(was_training)
    return student


def create_student(name: str, teacher: nn.Module | None = None, width_mult: float = 1.0,
                   num_classes: int | None = None, input_shape=None, **kwargs) -> nn.Module:
    """Zoo model ``name`` at ``width_mult``, shaped for ``teacher`` (or for the given classes and shape)."""
    if teacher is not None:
        teacher_classes, teacher_shape = teacher_signature(teacher)
        num_classes = num_classes or teacher_classes
        input_shape = input_shape or teacher_shape
    if num_classes is None or input_shape is None:
        raise ValueError("create_student needs a teacher, or num_classes and input_shape")
    channels, height, width = input_shape
    student = models.create(name, num_classes=num_classes, in_channels=channels, width_mult=width_mult,
                            input_size=(height, width), **kwargs)
    return _check_fits(student, name, input_shape)


def thin_student(teacher: nn.Module, width_mult: float) -> nn.Module:
    """The teacher's architecture (same name and options) rebuilt at ``width_mult``, freshly initialised."""
    arch = getattr(teacher, "torchslim_arch", None)
    if not arch:
        raise UserError(f"{type(teacher).__name__} was not built by torchslim.models.create; "
                        "name the student architecture explicitly")
    kwargs = dict(arch.get("kwargs", {}))
    kwargs.pop("width_mult", None)
    num_classes = kwargs.pop("num_classes")
    in_channels = kwargs.pop("in_channels")
    input_size = kwargs.pop("input_size", None)
    student = models.create(arch["name"], num_classes=num_classes, in_channels=in_channels,
                            width_mult=width_mult, input_size=input_size, **kwargs)
    return _check_fits(student, arch["name"], student.input_shape)
