"""Bring a model from a source, with weights from elsewhere, into torchslim (``torchslim import``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError
from .weights import fit_state, read_state_file
from ..models.sources import build, parse_source, split_options


@dataclass
class ImportConfig(ConfigMixin):
    """What ``torchslim import`` does: ``source`` (with optional JSON options), weights, head, input."""

    source: str = ""
    weights: str | None = None
    num_classes: int | None = None
    input_shape: tuple | None = None
    options: dict = field(default_factory=dict)
    seed: int = 0
    keep_fitting_head: bool = False  # a head that already predicts num_classes is kept, not refused



def _source_options(config: ImportConfig) -> tuple[str, dict]:
    text, options = split_options(config.source)
    options = {**options, **config.options}
    kind = parse_source(text).kind
    channels = config.input_shape[0] if config.input_shape else None
    if channels is not None and kind == "zoo":
        options.setdefault("in_channels", channels)
    elif channels not in (None, 3):
        if kind != "timm":
            raise UserError(f"{text} takes 3-channel images; --input {channels}x... needs a zoo or timm model")
        options.setdefault("in_chans", channels)
    return text, options


def _new_head(model: nn.Module, text: str, options: dict, config: ImportConfig) -> tuple[nn.Module, list[str]]:
    """Rebuild with ``num_classes`` and carry every tensor whose shape is unchanged; the rest is the head."""
    torch.manual_seed(config.seed)
    fresh = build(text, {**options, "num_classes": config.num_classes}, trust=True, input_size=_size(config))
    ours, theirs = model.state_dict(), fresh.state_dict()
    replaced = [k for k in theirs if k not in ours or ours[k].shape != theirs[k].shape]
    if not replaced and config.keep_fitting_head:
        return model, []
    if not replaced:
        raise UserError(f"{text} already predicts {config.num_classes} classes; drop --num-classes")
    fresh.load_state_dict({k: v for k, v in ours.items() if k not in replaced}, strict=False)
    return fresh, replaced


def _fits(model: nn.Module, state: dict) -> bool:
    expected = model.state_dict()
    return all(k in expected and expected[k].shape == v.shape for k, v in state.items())


def _size(config: ImportConfig):
    return tuple(config.input_shape[1:]) if config.input_shape else None


def import_model(config: ImportConfig) -> tuple[nn.Module, dict]:
    """The model of ``config.source`` with its weights and head; returns it and what was done."""
    text, options = _source_options(config)
    torch.manual_seed(config.seed)
    model = build(text, options, trust=True, input_size=_size(config))
    state = read_state_file(config.weights, model.state_dict().keys()) if config.weights else {}
    if state and config.num_classes is not None and "num_classes" not in options:
        # Weights already made for N classes (a fine-tuned checkpoint) fit the N-class model as they are.
        torch.manual_seed(config.seed)
        sized = build(text, {**options, "num_classes": config.num_classes}, trust=True, input_size=_size(config))
        if _fits(sized, state):
            model, options = sized, {**options, "num_classes": config.num_classes}
    if state:
        fit_state(model, state, config.weights, text)
    replaced = []
    if config.num_classes is not None and options.get("num_classes") != config.num_classes:
        model, replaced = _new_head(model, text, options, config)
    return model.eval(), {"source": text, "tensors_loaded": len(state), "head_replaced": replaced}
