"""Models: ``create(source)`` builds a zoo network, a torchvision or timm model, or the user's own.

Importing this package registers every family (LeNet, VGG, ResNet, MobileNetV2,
ShuffleNetV2, AlexNet).  ``list_models()`` names them and ``model_input_shape(name)`` gives
the (C, H, W) input each is designed for.
"""

from . import alexnet, lenet, mobilenet, resnet, shufflenet, vgg  # noqa: F401  (registration)
from . import binary, bireal  # noqa: F401  (registration: networks built for binarization)
from . import shallow  # noqa: F401  (registration: distillation students)
from .registry import list_models, model_input_shape, register_model
from .sources import create, create_for_data, parse_source, wrap

__all__ = ["create", "create_for_data", "list_models", "model_input_shape", "parse_source", "register_model", "wrap"]
