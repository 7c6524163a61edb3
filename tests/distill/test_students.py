import pytest
import torch

from torchslim import models
from torchslim.distill import LIGHTWEIGHT, create_student, thin_student
from torchslim.errors import UserError
from torchslim.profile import count_params


@pytest.fixture(scope="module")
def teacher():
    return models.create("vgg14", num_classes=7, in_channels=3, width_mult=0.25, input_size=(32, 32))


@pytest.mark.parametrize("name", LIGHTWEIGHT)
def test_lightweight_students_take_the_teachers_input_and_classes(teacher, name):
    student = create_student(name, teacher, width_mult=0.5)
    assert student(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert student.input_shape == (3, 32, 32) and student.torchslim_arch["kwargs"]["num_classes"] == 7
    assert count_params(student) < count_params(teacher)


@pytest.mark.parametrize("name", ["vgg14", "resnet20", "mobilenetv2"])
def test_thin_student_is_the_teachers_architecture_at_another_width(name):
    teacher = models.create(name, num_classes=10, in_channels=1, width_mult=0.5, input_size=(32, 32))
    student = thin_student(teacher, 0.25)
    assert student.torchslim_arch["name"] == name
    assert student.torchslim_arch["kwargs"] == {**teacher.torchslim_arch["kwargs"], "width_mult": 0.25}
    assert student(torch.zeros(1, 1, 32, 32)).shape == (1, 10)
    assert count_params(student) < count_params(teacher)


def test_student_that_cannot_take_the_input_fails_early():
    tiny = models.create("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))
    with pytest.raises(UserError, match="lenet5"):
        create_student("lenet5", tiny)
