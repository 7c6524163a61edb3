r"""The layer-by-layer alternating-update fine-tune of a binary-weight (BWN) network.

A convolution is a matrix product after im2col: with the patches of the layer's
input as rows, :math:`Y = X W` (:math:`X \in R^{P \times K}`, :math:`W \in R^{K \times N}`).
For each binary layer in order, the *quantized* model's input :math:`X_q` is fed in
and

.. math::  \min_{B \in \{-1,+1\}^{K \times N},\ A = \mathrm{diag}(a)} \; \| Y - X_q B A \|_F^2

is minimised, alternating between

* the scales: :math:`a_n = b_n^\top X_q^\top y_n / (b_n^\top X_q^\top X_q b_n)` (closed-form
  least squares for a fixed :math:`B`; a negative :math:`a_n` flips :math:`b_n`);
* the binary codes: one sweep of exact coordinate minimisation per row of :math:`B`
  (for :math:`a_n > 0`, :math:`b_{kn} = \mathrm{sign}(g_{kn} - a_n \sum_{j \ne k} h_{kj} b_{jn})`
  with :math:`H = X_q^\top X_q`, :math:`G = X_q^\top Y`).

Both steps are exact minimisers over their block, so the error never increases.
Everything is computed from the sufficient statistics :math:`H`, :math:`G` and
:math:`\|y_n\|^2`, accumulated in float64 over the calibration images (each batch's products in float32).

:math:`Y` is the full-precision target: the output of the same layer of the float
``reference`` model on its own (float) input when one is given, otherwise the
quantized layer's latent float weights applied to :math:`X_q`.  After all layers
the BatchNorm statistics are re-estimated on the calibration images.

The method is that of "結合半波高斯量化與交替更新的神經網絡壓縮方法" (HWGQ + BWN with
alternating update), Computer Engineering, 2021.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from ..train.batchnorm import recalibrate_batchnorm
from .modules import QuantConv2d, QuantLinear

__all__ = ["LayerReport", "alternating_update", "recalibrate_bn", "layer_statistics", "solve_layer",
           "teacher_gap"]

ALT_UPDATE_QUANTIZERS = ("bwn",)


@dataclass
class LayerReport:
    """Reconstruction error of one layer, relative to ``||Y||^2``, before and after."""

    name: str
    error_before: float
    error_after: float
    iterations: int
    history: list = field(default_factory=list)
    accepted: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class _Stop(Exception):
    pass


def _capture(model: nn.Module, name: str, x: torch.Tensor, want: str) -> torch.Tensor:
    """Run ``model`` on ``x`` up to module ``name``; return its input or output."""
    captured = {}

    def hook(module, inputs, output):
        captured["value"] = inputs[0] if want == "input" else output
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["value"]


def _rows(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """im2col: one row per output position, ``K = C_in * kh * kw`` columns."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return inputs.reshape(-1, inputs.shape[-1])


def _targets(layer: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1])
    return outputs.reshape(-1, outputs.shape[-1])


@torch.no_grad()
def layer_statistics(model, name, batches, reference=None):
    """``H = X^T X``, ``G = X^T Y`` and ``||y_n||^2`` (float64) for layer ``name``."""
    layer = model.get_submodule(name)
    stats = None
    for x in batches:
        inputs = _capture(model, name, x, "input")
        rows = _rows(layer, inputs).float()
        if reference is not None:
            target = _targets(layer, _capture(reference, name, x, "output")).float()
        else:
            target = rows @ layer.weight.detach().reshape(layer.weight.shape[0], -1).float().T
        if layer.bias is not None:
            target = target - layer.bias.detach().float()
        # Products per batch in float32, sums across batches in float64.
        update = ((rows.T @ rows).double(), (rows.T @ target).double(), (target.double() ** 2).sum(0))
        stats = update if stats is None else tuple(a + b for a, b in zip(stats, update))
    return stats


def _error(H, G, yy, B, A):
    HB = H @ B
    return float((yy - 2 * A * (B * G).sum(0) + A * A * (B * HB).sum(0)).sum())


def _update_scales(H, G, B):
    num = (B * G).sum(0)
    den = (B * (H @ B)).sum(0)
    A = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
    flip = A < 0
    return torch.where(flip, -B, B), A.abs()


def _update_codes(H, G, B, A):
    B = B.clone()
    HB = H @ B
    diag = torch.diagonal(H)
    for k in range(H.shape[0]):
        residual = G[k] - A * (HB[k] - diag[k] * B[k])
        new = torch.where(residual > 0, 1.0, torch.where(residual < 0, -1.0, B[k])).to(B.dtype)
        delta = new - B[k]
        if bool(delta.any()):
            HB += H[:, k : k + 1] * delta
            B[k] = new
    return B


def solve_layer(H, G, yy, B, A, iterations: int = 10, tol: float = 1e-9):
    """Alternate scale and code updates from ``(B, A)``; returns ``B, A, history``.

    ``history`` lists the absolute error after every half-step; it never increases.
    """
    history = [_error(H, G, yy, B, A)]
    for _ in range(iterations):
        B, A = _update_scales(H, G, B)
        history.append(_error(H, G, yy, B, A))
        B = _update_codes(H, G, B, A)
        history.append(_error(H, G, yy, B, A))
        if history[-3] - history[-1] <= tol * max(history[0], 1e-300):
            break
    return B, A, history


@torch.no_grad()
def _binary_layers(model, example: torch.Tensor) -> list[str]:
    """Names of the BWN layers in the order ``model`` runs them on ``example``.

    Each layer is fitted to the input the already-updated layers before it produce, so the
    order is the data flow, recorded by forward hooks (a layer counts at its first call);
    definition order (``named_modules``) can differ.  Layers the input never reaches are left out.
    """
    names = {m: name for name, m in model.named_modules()
             if isinstance(m, (QuantConv2d, QuantLinear)) and m.weight_quant in ALT_UPDATE_QUANTIZERS
             and (not isinstance(m, nn.Conv2d) or m.groups == 1)}
    order = []

    def record(module, inputs, output):
        if names[module] not in order:
            order.append(names[module])

    handles = [m.register_forward_hook(record) for m in names]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on ``batches`` (cumulative average).

    Only the BatchNorm layers run in training mode, so stochastic quantizers are
    deterministic here: the statistics are those of the inference network.
    """
    recalibrate_batchnorm(model, batches)
    return model



@torch.no_grad()
def teacher_gap(model: nn.Module, batches, teacher_logits: list) -> float:
    """Mean KL divergence of ``model``'s class distribution from the teacher's, per image."""
    total, count = 0.0, 0
    for x, target in zip(batches, teacher_logits):
        total += float(F.kl_div(F.log_softmax(model(x), 1), target, log_target=True, reduction="sum"))
        count += len(x)
    return total / max(count, 1)


class _Guard:
    """Keeps a layer's update only if, BN re-estimated, the network moves closer to the teacher."""

    def __init__(self, model, batches, reference, judge_batches):
        self.batches, self.judge = batches, judge_batches
        with torch.no_grad():
            self.teacher = [F.log_softmax(reference(x), 1) for x in judge_batches]
        recalibrate_bn(model, batches)
        self.best = teacher_gap(model, judge_batches, self.teacher)

    def try_update(self, model, layer, weight) -> bool:
        saved = copy.deepcopy(model.state_dict())
        layer.weight.data.copy_(weight)
        recalibrate_bn(model, self.batches)
        gap = teacher_gap(model, self.judge, self.teacher)
        if gap <= self.best:
            self.best = gap
            return True
        model.load_state_dict(saved)
        return False


def alternating_update(model: nn.Module, batches, reference: nn.Module | None = None, iterations: int = 10,
                       recalibrate: bool = True, progress: bool = False, guard: bool = False, guard_batches=None):
    """Fine-tune every BWN layer of a quantized ``model`` in order; returns ``(new model, reports)``.

    ``batches``: a list of input tensors (see :func:`torchslim.data.calibration_images`).  ``reference``:
    the float model the quantized one came from (same module names).  ``guard`` (needs
    ``reference``): keep each layer's new weights only if, with the BatchNorm statistics
    re-estimated, the network's outputs on ``batches`` move closer to the reference's (KL of
    the class distributions); otherwise the layer keeps its weights (``accepted`` False).
    ``guard_batches``: judge on these images instead (held out from the ones the layers are fitted on).
    The update pulls every layer towards the float model's function; after a long fine-tune
    the quantized network has adapted away from it, and the guard stops the layers where
    that costs more than it gains.  The caller's model is left unchanged.
    """
    if not batches:
        raise UserError("the alternating update needs at least one calibration batch")
    if guard and reference is None:
        raise UserError("the guarded alternating update compares with the float model: give a reference")
    tuned = copy.deepcopy(model).eval()
    layers = _binary_layers(tuned, batches[0][:1])
    if not layers:
        raise UserError("the alternating update needs binary-weight (bwn) layers; quantize with "
                        "method hwgq-bwn, bwn or xnor first")
    reference = reference.eval() if reference is not None else None
    keeper = _Guard(tuned, batches, reference, guard_batches or batches) if guard else None
    reports = []
    for name in tqdm(layers, desc="alt-update", leave=False, disable=not progress):
        layer = tuned.get_submodule(name)
        H, G, yy = layer_statistics(tuned, name, batches, reference)
        codes, scale = layer.encode()
        B = codes.reshape(codes.shape[0], -1).T.double()
        B, A, history = solve_layer(H, G, yy, B, scale.double(), iterations)
        total = float(yy.sum()) or 1.0
        weight = (B * A).T.reshape(layer.weight.shape).to(layer.weight.dtype)
        if keeper is not None:
            accepted = keeper.try_update(tuned, layer, weight)
        else:
            layer.weight.data.copy_(weight)
            accepted = True
        reports.append(LayerReport(name, history[0] / total, history[-1] / total, (len(history) - 1) // 2,
                                   [h / total for h in history], accepted))
    if recalibrate:
        recalibrate_bn(tuned, batches)
    return tuned.eval(), reports
