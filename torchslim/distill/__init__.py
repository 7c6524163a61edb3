"""Knowledge distillation: losses, frozen and online teachers, lightweight students.

``kd_loss_fn(teacher, temperature, alpha, loss)`` plugs a teacher into any
fine-tune step through :func:`torchslim.train.fit`'s ``loss_fn`` hook.
"""

from .losses import LOSSES, check_kd_args, get_loss, hinton_loss, list_losses, mxnet_loss, register_loss, tf_loss
from .teacher import FrozenTeacher, KDLoss, freeze, kd_loss_fn

__all__ = [
    "LOSSES",
    "FrozenTeacher",
    "KDLoss",
    "check_kd_args",
    "freeze",
    "get_loss",
    "hinton_loss",
    "kd_loss_fn",
    "list_losses",
    "mxnet_loss",
    "register_loss",
    "tf_loss",
]

from .api import DistillConfig, JointModel, distill, train_online  # noqa: E402
from .cache import LogitCache  # noqa: E402
from .students import LIGHTWEIGHT, create_student, thin_student  # noqa: E402

__all__ += ["DistillConfig", "JointModel", "LIGHTWEIGHT", "LogitCache", "create_student", "distill",
            "thin_student", "train_online"]
from .hints import HintedStudent, hint_loss_fn, parse_hint  # noqa: E402

__all__ += ["HintedStudent", "hint_loss_fn", "parse_hint"]
