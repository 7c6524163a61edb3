"""Knowledge distillation: losses, frozen and online teachers, feature hints, lightweight students.

``kd_loss_fn(teacher, temperature, alpha, loss)`` plugs a teacher into any
fine-tune step through :func:`torchslim.train.fit`'s ``loss_fn`` hook;
``distill(student, DistillConfig(...), data, teacher=teacher, train_config=TrainConfig(...))``
returns a trained copy of the student (``.model``), ``train_online`` trains copies of both together.
"""

from .api import DistillConfig, DistillResult, JointModel, distill, train_online
from .cache import LogitCache
from .hints import HintedStudent, hint_loss_fn, parse_hint
from .losses import LOSSES, check_kd_args, get_loss, hinton_loss, list_losses, mxnet_loss, register_loss, tf_loss
from .students import LIGHTWEIGHT, create_student, thin_student
from .teacher import FrozenTeacher, KDLoss, freeze_teacher, kd_loss_fn

__all__ = [
    "LIGHTWEIGHT",
    "LOSSES",
    "DistillConfig",
    "DistillResult",
    "FrozenTeacher",
    "HintedStudent",
    "JointModel",
    "KDLoss",
    "LogitCache",
    "check_kd_args",
    "create_student",
    "distill",
    "freeze_teacher",
    "get_loss",
    "hint_loss_fn",
    "hinton_loss",
    "kd_loss_fn",
    "list_losses",
    "mxnet_loss",
    "parse_hint",
    "register_loss",
    "tf_loss",
    "thin_student",
    "train_online",
]
