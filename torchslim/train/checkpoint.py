"""Training checkpoints: written atomically, loaded to resume exactly where a run stopped."""

from __future__ import annotations

import os

import torch

from ..errors import UserError
from ..io.atomic import atomic_path


def save_checkpoint(path, state: dict) -> None:
    """Atomically write ``state`` (tensors, numbers, strings, dicts) to ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    if not os.path.exists(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file must not crash a resume with a traceback
        raise UserError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start over") from None
