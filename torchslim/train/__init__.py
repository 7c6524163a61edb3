"""Training and evaluation shared by every compression step."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, init_from_env
from .loop import evaluate, fit, resolve_device

__all__ = [
    "DistInfo",
    "TrainConfig",
    "evaluate",
    "fit",
    "init_from_env",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]
