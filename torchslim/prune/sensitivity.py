"""Per-layer pruning sensitivity: how much top-1 each channel group loses on its own.

Each prunable group is cut alone, by each ratio, with no fine-tuning, and the copy is
evaluated.  Layers whose accuracy barely moves can be pruned hard; the steep ones should
be pruned lightly or ignored.  The graph is traced and the channels scored once; every
evaluated model is a fresh copy, so the caller's model is never touched.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import UserError
from ..train import evaluate
from ..data.calibration import calibration_pairs
from .api import PruneConfig
from .criteria import Context, get_criterion, score_groups
from .graph import build_graph
from .select import CostModel, select_channels
from .surgery import apply_removal

__all__ = ["sensitivity_sweep", "check_ratios"]


def check_ratios(ratios) -> list[float]:
    """The ratios as sorted, distinct floats, each strictly between 0 and 1."""
    if isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__iter__"):
        raise UserError(f"ratios must be a list of numbers in (0, 1), got {ratios!r}")
    values = []
    for value in ratios:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"each pruning ratio must be a number in (0, 1), got {value!r}")
        if not 0 < value < 1:
            raise UserError(f"each pruning ratio must be in (0, 1) (the share of channels removed), got {value}")
        values.append(float(value))
    if not values:
        raise UserError("give at least one pruning ratio in (0, 1)")
    return sorted(set(values))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _images(data, count: int):
    """At most ``count`` samples of an ImageSet, class-balanced and the same every run
    (the first N of a folder data set sorted by class would hold one or two classes)."""
    if not hasattr(data, "subset") or not hasattr(data, "input_shape"):
        raise UserError(f"data must be an ImageSet (see torchslim.data.load_dataset), got {type(data).__name__}")
    if len(data) == 0:
        raise UserError(f"{data.name} has no images to evaluate on")
    return data.subset(min(count, len(data)), seed=0)


def _plan(model: nn.Module, data, criterion: str, calibration):
    """Trace and score a private copy: (graph, scores, cost model)."""
    work = copy.deepcopy(model)
    device = next((p.device for p in work.parameters()), torch.device("cpu"))
    example = torch.zeros(1, *data.input_shape, device=device)
    graph = build_graph(work, example)
    batches = []
    if get_criterion(criterion).needs_data:
        batches = calibration_pairs(calibration if calibration is not None else data, 8, 64, 0, device)
    scores = score_groups(criterion, graph.groups, Context(work, graph, batches, 0))
    cost = CostModel(work, graph, tuple(example.shape[1:]))
    for param in work.parameters():
        param.grad = None
    return graph, scores, cost


def _pruned_copy(model, graph, group, score, cost, config) -> tuple[nn.Module, int]:
    """A copy of ``model`` with only ``group`` pruned as ``config`` (layer scope) says,
    and the channels the group keeps."""
    removed, counts = select_channels([group], [score], cost, config)
    pruned = copy.deepcopy(model)
    apply_removal(pruned, graph, removed)
    return pruned, len(group) - counts[0]


def sensitivity_sweep(model: nn.Module, data, ratios=(0.25, 0.5, 0.75), criterion: str = "l1",
                      max_images: int = 1000, batch_size: int = 256, log=None, calibration=None) -> dict:
    """Top-1 after pruning each channel group alone by each ratio (no fine-tune).

    ``data`` is an ImageSet; a class-balanced ``max_images`` of its images are evaluated.
    ``calibration`` feeds the data criteria (defaults to those same images).  ``log``,
    if given, is called with one line per group.  Returns a JSON-ready dict.
    """
    ratios = check_ratios(ratios)
    get_criterion(criterion)
    _positive_int("max_images", max_images)
    _positive_int("batch_size", batch_size)
    images = _images(data, max_images)
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(images.input_shape):
        raise UserError(f"the model expects input {'x'.join(map(str, expected))} but {images.name} gives "
                        f"{'x'.join(map(str, images.input_shape))}")
    graph, scores, cost = _plan(model, images, criterion, calibration)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    baseline = evaluate(model, images, batch_size=batch_size, device=device)["top1"]
    layers = []
    for group in graph.groups:
        if len(group) < 2:  # one channel cannot be pruned
            continue
        row = {"layer": group.name, "channels": len(group), "kept": [], "top1": []}
        for ratio in ratios:
            config = PruneConfig(criterion=criterion, ratio=ratio, scope="layer")
            pruned, kept = _pruned_copy(model, graph, group, scores[group.index], cost, config)
            row["kept"].append(kept)
            row["top1"].append(evaluate(pruned, images, batch_size=batch_size, device=device)["top1"])
        layers.append(row)
        if log is not None:
            cells = ", ".join(f"{r:g}: {t:.4f}" for r, t in zip(ratios, row["top1"]))
            log(f"{group.name} ({len(group)} channels) top-1 {cells}")
    return {"criterion": criterion, "ratios": ratios, "baseline_top1": baseline, "images": len(images),
            "layers": layers}
