"""Feature (hint) distillation: match chosen intermediate layers of student and teacher.

For every pair ``(student_layer, teacher_layer)`` the student's feature map goes
through an adapter and is compared with the teacher's by mean squared error
(FitNets, Romero et al. 2015):

.. math::
    L_{hint} = \\sum_{pairs} \\mathrm{mean}\\big( (A(f_s) - f_t)^2 \\big)

``A`` is a bias-free 1x1 convolution (a linear layer for flat features) when the
channel counts differ, else the identity.  When the spatial sizes differ, the
larger map is average-pooled to the smaller one.  The adapters are trained with
the student and dropped afterwards: :attr:`HintedStudent.student` is the plain
network to save.  Hints need the teacher's features, so a logit cache does not
apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, unknown_choice
from .teacher import KDLoss, freeze_teacher

__all__ = ["HintedStudent", "hint_loss_fn", "parse_hint"]


def parse_hint(text: str) -> tuple[str, str]:
    """``"features.3:features.10"`` -> ``("features.3", "features.10")`` (student layer, teacher layer)."""
    student_layer, sep, teacher_layer = str(text).partition(":")
    if not sep or not student_layer.strip() or not teacher_layer.strip():
        raise UserError(f"--hint must be STUDENT_LAYER:TEACHER_LAYER (module names), got {text!r}")
    return student_layer.strip(), teacher_layer.strip()


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise unknown_choice(f"{role} layer", name, [n for n in modules if n])
    return modules[name]


def _probe(model: nn.Module, names: list[str], input_shape, role: str) -> list[torch.Size]:
    found: dict[str, torch.Size] = {}
    handles = [_module(model, name, role).register_forward_hook(
        lambda _m, _i, out, name=name: found.__setitem__(name, out.shape)) for name in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [found[name] for name in names]


def _adapter(student_shape, teacher_shape) -> nn.Module:
    if len(student_shape) != len(teacher_shape):
        raise UserError(f"cannot match a {len(student_shape) - 1}-d student feature with a "
                        f"{len(teacher_shape) - 1}-d teacher feature; pick layers of the same kind")
    cs, ct = student_shape[1], teacher_shape[1]
    if cs == ct:
        return nn.Identity()
    return nn.Conv2d(cs, ct, 1, bias=False) if len(student_shape) == 4 else nn.Linear(cs, ct, bias=False)


def _match(student_feature: torch.Tensor, teacher_feature: torch.Tensor):
    if student_feature.dim() == 4 and student_feature.shape[-2:] != teacher_feature.shape[-2:]:
        size = [min(a, b) for a, b in zip(student_feature.shape[-2:], teacher_feature.shape[-2:])]
        student_feature = F.adaptive_avg_pool2d(student_feature, size)
        teacher_feature = F.adaptive_avg_pool2d(teacher_feature, size)
    return student_feature, teacher_feature


class HintedStudent(nn.Module):
    """The student plus one adapter per hint pair; ``forward`` is the student's and records its features."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs, input_shape):
        super().__init__()
        pairs = [parse_hint(p) if isinstance(p, str) else tuple(p) for p in pairs]
        if not pairs:
            raise UserError("give at least one hint pair STUDENT_LAYER:TEACHER_LAYER")
        self.student = student
        self.pairs = pairs
        student_shapes = _probe(student, [s for s, _ in pairs], input_shape, "student")
        teacher_shapes = _probe(teacher, [t for _, t in pairs], input_shape, "teacher")
        self.adapters = nn.ModuleList(_adapter(s, t) for s, t in zip(student_shapes, teacher_shapes))
        self.adapters.to(next(student.parameters()).device)
        self.features: list[torch.Tensor | None] = [None] * len(pairs)
        self._handles = [_module(student, name, "student").register_forward_hook(self._recorder(index))
                         for index, (name, _) in enumerate(pairs)]

    def release(self) -> nn.Module:
        """Remove the recording hooks and return the plain student."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.student

    def _recorder(self, index: int):
        def hook(_module, _inputs, output):
            self.features[index] = output

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def hint_loss(self, teacher_features) -> torch.Tensor:
        total = 0.0
        for adapter, student_feature, teacher_feature in zip(self.adapters, self.features, teacher_features):
            s, t = _match(adapter(student_feature), teacher_feature)
            total = total + F.mse_loss(s, t.to(s.dtype))
        return total


def hint_loss_fn(hinted: HintedStudent, teacher: nn.Module, weight: float = 1.0, temperature=None, alpha=None,
                 loss: str = "hinton"):
    """``loss_fn`` for ``fit(hinted, ...)``: the KD loss plus ``weight`` times the hint loss."""
    if not weight >= 0:
        raise UserError(f"hint weight must be >= 0, got {weight}")
    freeze_teacher(teacher)
    teacher_features: list[torch.Tensor | None] = [None] * len(hinted.pairs)
    handles = [_module(teacher, name, "teacher").register_forward_hook(
        lambda _m, _i, out, index=index: teacher_features.__setitem__(index, out))
        for index, (_, name) in enumerate(hinted.pairs)]
    kd = KDLoss(teacher, temperature=temperature, alpha=alpha, loss=loss)

    def loss_fn(model, x, y):
        kd_loss, logits = kd(model, x, y)  # runs student and teacher: both sets of features are recorded
        return kd_loss + weight * getattr(model, "module", model).hint_loss(teacher_features), logits

    def release() -> None:
        """Remove the teacher's recording hooks."""
        for handle in handles:
            handle.remove()
        handles.clear()

    loss_fn.kd = kd
    loss_fn.release = release
    return loss_fn
