"""``distill``: train a student from an offline teacher; ``train_online``: teacher and student together.

``distill(student, DistillConfig(...), data, teacher=teacher)`` returns a trained copy of the
student (in a :class:`DistillResult`); neither the caller's student nor its teacher changes.
Both are thin layers over :func:`torchslim.train.fit` (same schedule, checkpoint and resume,
DDP), configured by :class:`DistillConfig` plus a :class:`~torchslim.train.TrainConfig`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError
from ..nn import record_meta
from ..train import TrainConfig, fit
from .hints import HintedStudent, hint_loss_fn, parse_hint
from .losses import check_kd_args, get_loss
from .teacher import KDLoss, freeze_teacher
from .cache import LogitCache

__all__ = ["DistillConfig", "DistillResult", "distill", "train_online", "JointModel"]


@dataclass
class DistillConfig(ConfigMixin):
    """How the teacher enters the loss.

    ``alpha`` is the teacher's share (0 = labels only); ``cache_dir``, when set,
    keeps the offline teacher's logits on disk (see :mod:`torchslim.distill.cache`).
    """

    option_kind = "distillation option"

    temperature: float | None = None  # None: the loss's default (hinton 4, mxnet 2, tf 3)
    alpha: float | None = None  # None: the loss's default (hinton 0.9, mxnet 0.5, tf 0.5)
    loss: str = "hinton"
    cache_dir: str | None = None
    hints: tuple[str, ...] = ()  # "STUDENT_LAYER:TEACHER_LAYER" feature pairs (see torchslim.distill.hints)
    hint_weight: float = 1.0

    def __post_init__(self):
        spec = get_loss(self.loss)
        self.temperature = spec.default_temperature if self.temperature is None else self.temperature
        self.alpha = spec.default_alpha if self.alpha is None else self.alpha
        self.temperature, self.alpha = check_kd_args(self.temperature, self.alpha)
        self.hints = tuple(self.hints)
        for pair in self.hints:
            parse_hint(pair)
        if self.hints and self.cache_dir:
            raise UserError("hints need the teacher's features every step, so they cannot use a logit cache")
        if not self.hint_weight >= 0:
            raise UserError(f"hint weight must be >= 0, got {self.hint_weight}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hints"] = list(self.hints)
        return data


@dataclass
class DistillResult:
    """The trained copy of the student, fit's history (plus cache stats) and, online, the trained teacher."""

    model: nn.Module
    history: dict = field(default_factory=dict)
    teacher: nn.Module | None = None


def check_pair(student: nn.Module, teacher: nn.Module, input_shape, num_classes: int | None = None) -> None:
    """UserError unless student and teacher take ``input_shape`` and predict ``num_classes`` classes each."""
    shapes = []
    for role, model in (("teacher", teacher), ("student", student)):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                shapes.append(tuple(model(torch.zeros(1, *input_shape, device=_device_of(model))).shape))
        except RuntimeError as exc:
            raise UserError(f"the {role} cannot take input {'x'.join(map(str, input_shape))} "
                            f"({str(exc).splitlines()[0][:160]})") from None
        finally:
            model.train(was_training)
    if num_classes is not None and shapes[0][-1] != num_classes:
        raise UserError(f"the teacher predicts {shapes[0][-1]} classes but the data has {num_classes}")
    if shapes[0] != shapes[1]:
        raise UserError(f"the teacher predicts {shapes[0][-1]} classes but the student {shapes[1][-1]}")


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def distill(model: nn.Module, config: DistillConfig | None, data, *, teacher: nn.Module,
            train_config: TrainConfig | None = None, eval_set=None, checkpoint_path=None,
            progress: bool = True) -> DistillResult:
    """A copy of the student ``model`` trained on ``data`` against the frozen ``teacher``.

    ``config.alpha = 0`` trains exactly as plain cross-entropy would, so the same call gives
    the "student alone" baseline.  The caller's student and teacher are left as they were.
    """
    student, teacher = copy.deepcopy(model), copy.deepcopy(teacher)
    history = _distill(student, teacher, data, train_config or TrainConfig(), config or DistillConfig(),
                       eval_set, checkpoint_path, progress)
    return DistillResult(record_meta(student, distill=history["distill"]), history)


def _distill(student, teacher, train_set, config, kd, eval_set, checkpoint_path, progress) -> dict:
    check_pair(student, teacher, train_set.input_shape, train_set.num_classes)
    cache = None
    if kd.cache_dir and kd.alpha > 0:
        cache = LogitCache(kd.cache_dir, freeze_teacher(teacher),
                           data_key=f"{train_set.name}/{train_set.split}/n={len(train_set)}/augment={config.augment}",
                           seed=config.seed)
    if kd.hints:
        return _distill_with_hints(student, teacher, train_set, config, kd, eval_set, checkpoint_path, progress)
    loss_fn = KDLoss(teacher, kd.temperature, kd.alpha, kd.loss, cache=cache)
    history = fit(student, train_set, config, eval_set=eval_set, checkpoint_path=checkpoint_path,
                  loss_fn=loss_fn, progress=progress)
    loss_fn.flush()
    history["distill"] = kd.to_dict()
    if cache is not None:
        history["cache"] = cache.stats()
    return history


def _distill_with_hints(student, teacher, train_set, config, kd, eval_set, checkpoint_path, progress) -> dict:
    hinted = HintedStudent(student, teacher, kd.hints, train_set.input_shape)
    loss_fn = hint_loss_fn(hinted, teacher, kd.hint_weight, kd.temperature, kd.alpha, kd.loss)
    try:
        history = fit(hinted, train_set, config, eval_set=eval_set, checkpoint_path=checkpoint_path,
                      loss_fn=loss_fn, progress=progress)
    finally:
        hinted.release()
        loss_fn.release()
    history["distill"] = kd.to_dict()
    return history


class JointModel(nn.Module):
    """Student and teacher as one module, so one optimizer trains both; ``forward`` is the student's."""

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student = student
        self.teacher = teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def online_loss_fn(kd: DistillConfig):
    """Loss for :class:`JointModel`: CE for the teacher, KD (teacher detached) for the student."""
    loss = get_loss(kd.loss)

    def loss_fn(model, x, y):
        joint = getattr(model, "module", model)
        teacher_logits = joint.teacher(x)
        student_logits = joint.student(x)
        teacher_loss = torch.nn.functional.cross_entropy(teacher_logits, y)
        student_loss = loss(student_logits, teacher_logits.detach(), y, kd.temperature, kd.alpha)
        return teacher_loss + student_loss, student_logits

    return loss_fn


def train_online(model: nn.Module, config: DistillConfig | None, data, *, teacher: nn.Module,
                 train_config: TrainConfig | None = None, eval_set=None, checkpoint_path=None,
                 progress: bool = True) -> DistillResult:
    """Train copies of ``teacher`` (on the labels) and the student ``model`` (on labels + the teacher's
    current logits) together; the result holds both.

    One optimizer updates both.  The student learns from the teacher as it improves, so no
    pre-trained teacher is needed; the teacher gets no gradient from the student.  A logit
    cache does not apply here.
    """
    student, teacher = copy.deepcopy(model), copy.deepcopy(teacher)
    kd = config or DistillConfig()
    check_pair(student, teacher, data.input_shape, data.num_classes)
    for param in teacher.parameters():
        param.requires_grad_(True)
    joint = JointModel(student, teacher)
    history = fit(joint, data, train_config or TrainConfig(), eval_set=eval_set, checkpoint_path=checkpoint_path,
                  loss_fn=online_loss_fn(kd), progress=progress)
    history["distill"] = {**kd.to_dict(), "online": True}
    return DistillResult(record_meta(student, distill=history["distill"]), history, teacher)
