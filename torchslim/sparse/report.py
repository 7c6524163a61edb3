"""Per-layer sparsity report: weights, non-zeros and the fraction pruned."""

from __future__ import annotations

import torch
from torch import nn


def _layer_weight(module: nn.Module):
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.ndim > 1 else None


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """``{"layers": [{name, type, params, nonzero, sparsity}], "params", "nonzero", "sparsity"}``.

    Covers every layer with a weight matrix or kernel, compressed layer types
    included (their weight is reconstructed to count its zeros).
    """
    rows = []
    for path, module in model.named_modules():
        weight = _layer_weight(module)
        if weight is None:
            continue
        total, nonzero = weight.numel(), int(torch.count_nonzero(weight))
        rows.append({"name": path, "type": type(module).__name__, "params": total, "nonzero": nonzero,
                     "sparsity": 1.0 - nonzero / max(total, 1)})
    params = sum(r["params"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    return {"layers": rows, "params": params, "nonzero": nonzero, "sparsity": 1.0 - nonzero / max(params, 1)}


def format_sparsity_report(report: dict) -> str:
    rows = report["layers"]
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<16} {'weights':>10} {'non-zero':>10} {'sparsity':>9}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['type']:<16} {r['params']:>10,} {r['nonzero']:>10,} "
                     f"{r['sparsity']:>9.2%}")
    lines.append(f"{'total':<{width}}  {'':<16} {report['params']:>10,} {report['nonzero']:>10,} "
                 f"{report['sparsity']:>9.2%}")
    return "\n".join(lines)
