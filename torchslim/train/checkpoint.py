"""Training checkpoints: written atomically, loaded to resume exactly where a run stopped."""

from __future__ import annotations

import hashlib
import json
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


def _tensor_digest(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def model_digest(model: torch.nn.Module) -> str:
    """Names, shapes and dtypes of the model's state: another architecture or width differs.  The
    values are left out: a resume takes them from the checkpoint (callers add a digest of their
    starting file through ``extra`` where the start matters)."""
    layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def data_digest(dataset, sample: int = 4096) -> str:
    """The data set's name, size, shape and classes, all its labels and an even sample of its images."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(getattr(dataset, "name", "")), len(dataset), list(dataset.input_shape),
                              int(dataset.num_classes)]).encode())
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        _tensor_digest(digest, labels)
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and len(images):
        _tensor_digest(digest, images[:: max(1, len(images) // sample)])
    return digest.hexdigest()[:16]


def resume_key(model, dataset, settings: dict, extra: dict | None = None) -> dict:
    """What a checkpoint must match to be resumed: the model, the data, the settings and ``extra``."""
    settings = {**settings, **(extra or {})}
    return {"model": model_digest(model), "data": data_digest(dataset),
            "settings": json.loads(json.dumps(settings, sort_keys=True, default=str))}


def check_resume_key(path, state: dict, key: dict) -> None:
    """One line, naming what differs, when ``state`` was written by another run than ``key`` describes."""
    saved = state.get("key")
    if saved == key:
        return
    if not isinstance(saved, dict):
        differs = "it was written before runs were keyed"
    else:
        names = {"model": "model (architecture or width)", "data": "data (set or --subset)",
                 "settings": "settings (seed, batch size, learning rate, starting file, ...)"}
        differs = "its " + " and ".join(names[k] for k in names if saved.get(k) != key.get(k)) + " differ"
    raise UserError(f"checkpoint {path} belongs to another run ({differs}); delete it to start over, "
                    "or use another --out")
