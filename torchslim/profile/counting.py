"""Parameter and multiply-accumulate counts.

MACs come from ``torch.utils.flop_counter`` (which already handles grouped and
depthwise convolutions): MACs = FLOPs / 2 for conv and matmul ops.  Element-wise
work (BN, activations, adds) is not counted, following the papers' convention.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def example_input(input_shape, batch_size: int = 1, device="cpu") -> torch.Tensor:
    return torch.randn(batch_size, *input_shape, device=device)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape, per_layer: bool = False):
    """Total MACs for one sample of ``input_shape`` (C, H, W).

    With ``per_layer=True`` returns ``(total, {module path: macs})`` for the leaf
    modules that do conv/matmul work.
    """
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with FlopCounterMode(display=False) as counter:
            model(example_input(input_shape, device=device))
    finally:
        model.train(was_training)
    total = counter.get_total_flops() // 2
    if not per_layer:
        return total
    root = type(model).__name__
    counts = counter.get_flop_counts()
    layers = {}
    for path, module in model.named_modules():
        if path and not any(True for _ in module.children()):
            flops = sum(counts.get(f"{root}.{path}", {}).values())
            if flops:
                layers[path] = flops // 2
    return total, layers


def layer_table(model: nn.Module, input_shape) -> list[dict]:
    """One row per leaf layer with parameters or MACs: name, type, shape, params, macs."""
    _, macs = count_macs(model, input_shape, per_layer=True)
    rows = []
    for path, module in model.named_modules():
        if not path or any(True for _ in module.children()):
            continue
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if not params and path not in macs:
            continue
        weight = getattr(module, "weight", None)
        shape = "x".join(str(s) for s in weight.shape) if isinstance(weight, torch.Tensor) else ""
        rows.append(
            {"name": path, "type": type(module).__name__, "shape": shape, "params": params, "macs": macs.get(path, 0)}
        )
    return rows
