"""Q-CNN (Wu et al., CVPR 2016): product quantization fitted to the layer's output.

For a layer with unfolded weight ``W[out, D]`` (``D`` = input channels x kernel
positions), calibration inputs ``Xq`` seen by the *already-quantized* network and
``Xf`` seen by the float one, the target is ``Y = Xf W^T`` and the loss is

    E(What) = ||Xq What^T - Y||^2 = tr(What H What^T) - 2 tr(What P) + const,
    H = Xq^T Xq,  P = Xq^T Xf W^T,

so only the ``D x D`` statistics are needed.  Starting from weight-space PQ,
rounds alternate two exact block updates, each of which never raises ``E``:

* the codebook of a subspace, given the assignments: one linear least-squares
  solve over its ``K x d`` codeword values;
* the assignment of each (subspace, kernel position) block, given the rest:
  ``argmin_k D_k^T H_JJ D_k - 2 D_k^T g`` for every output unit.

Using ``Xq`` with the float ``Xf`` target is the paper's error correction: each
layer also compensates the error its quantized predecessors left behind.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import BatchLoader
from ..nn import set_submodule
from .pq import PQ_TYPES, pq_weight_fit, register_pq_method


def calibration_batch(calib_set, samples: int, seed: int = 0) -> torch.Tensor:
    """``samples`` class-balanced, normalised images of an ImageSet (no augmentation)."""
    subset = calib_set.subset(min(samples, len(calib_set)), seed=seed)
    return next(iter(BatchLoader(subset, batch_size=len(subset))))[0]


@torch.no_grad()
def layer_inputs(model: nn.Module, path: str, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The input tensor the layer at ``path`` receives for ``images``."""
    captured = []
    handle = model.get_submodule(path).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured)


def unfolded_rows(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Rows ``[N, D]`` the layer multiplies by ``W[out, D]^T`` (im2col for a conv)."""
    if isinstance(layer, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1])
    cols = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _kernel_positions(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.Linear) else layer.kernel_size[0] * layer.kernel_size[1]


class _Problem:
    """The quadratic ``E`` of one layer with its block structure."""

    def __init__(self, layer, H, P, subvector):
        self.H, self.Pt = H, P.t().contiguous()  # Pt: out x D
        self.kk, self.d = _kernel_positions(layer), subvector
        self.out = layer.weight.shape[0]
        self.subspaces = H.shape[0] // (self.kk * self.d)
        channels = torch.arange(self.d)
        # cols[s][pos]: unfolded columns of the channels of subspace s at kernel position pos
        self.cols = [[(s * self.d + channels) * self.kk + pos for pos in range(self.kk)] for s in range(self.subspaces)]

    def weight(self, codebooks, codes) -> torch.Tensor:
        W = torch.zeros(self.out, self.H.shape[0], dtype=self.H.dtype)
        for s in range(self.subspaces):
            table = codebooks[s]
            per_pos = codes[s].reshape(self.out, self.kk)
            for pos in range(self.kk):
                W[:, self.cols[s][pos]] = table[per_pos[:, pos]]
        return W

    def energy(self, W) -> float:
        return float((W * (W @ self.H)).sum() - 2 * (W * self.Pt).sum())

    def update_codebook(self, s, codebooks, codes, W, Q) -> None:
        K, d, kk = codebooks.shape[1], self.d, self.kk
        Js = torch.cat(self.cols[s])
        Hss = self.H[Js][:, Js]
        g = self.Pt[:, Js] - (Q[:, Js] - W[:, Js] @ Hss)  # out x (kk*d)
        onehot = F.one_hot(codes[s].reshape(self.out, kk).t(), K).to(self.H.dtype)  # kk x out x K
        counts = torch.einsum("pok,qol->pqkl", onehot, onehot)
        blocks = Hss.reshape(kk, d, kk, d).permute(0, 2, 1, 3)  # pos, pos', d, d
        M = torch.einsum("pqkl,pqde->kdle", counts, blocks).reshape(K * d, K * d)
        L = torch.einsum("pok,opd->kd", onehot, g.reshape(self.out, kk, d)).reshape(-1)
        ridge = 1e-6 * float(M.diagonal().mean()) + 1e-12
        old = codebooks[s].reshape(-1)
        new = torch.linalg.solve(M + ridge * torch.eye(K * d, dtype=M.dtype), L + ridge * old).reshape(K, d)
        codebooks[s] = new
        self._set_subspace(s, codebooks, codes, W, Q)

    def _set_subspace(self, s, codebooks, codes, W, Q) -> None:
        Js = torch.cat(self.cols[s])
        per_pos = codes[s].reshape(self.out, self.kk)
        new = torch.cat([codebooks[s][per_pos[:, pos]] for pos in range(self.kk)], dim=1)
        Q += (new - W[:, Js]) @ self.H[Js]
        W[:, Js] = new

    def update_assignments(self, s, codebooks, codes, W, Q) -> None:
        table = codebooks[s]
        per_pos = codes[s].reshape(self.out, self.kk).clone()
        for pos in range(self.kk):
            J = self.cols[s][pos]
            HJJ = self.H[J][:, J]
            g = self.Pt[:, J] - (Q[:, J] - W[:, J] @ HJJ)
            cost = torch.einsum("kd,de,ke->k", table, HJJ, table)[None, :] - 2 * g @ table.t()
            per_pos[:, pos] = cost.argmin(1)
            new = table[per_pos[:, pos]]
            Q += (new - W[:, J]) @ self.H[J]
            W[:, J] = new
        codes[s] = per_pos.reshape(-1)


def qcnn_fit(layer, Xq, Xf, config, seed: int = 0):
    """Q-CNN codebooks and codes of one layer from its unfolded calibration rows."""
    codebooks, codes = pq_weight_fit(layer, config, seed)
    if layer.weight.ndim == 4 and layer.groups != 1:
        return codebooks, codes  # grouped convs: the block structure differs; keep weight-space PQ
    Xq, Xf = Xq.double(), Xf.double()
    n = Xq.shape[0]
    H = Xq.t() @ Xq / n
    P = (Xq.t() @ Xf / n) @ layer.weight.detach().double().reshape(layer.weight.shape[0], -1).t()
    problem = _Problem(layer, H, P, config.subvector)
    # Codes index rows (out, kernel position) in the same order as pq_matrix, columns in unfold order.
    codebooks, codes = codebooks.double(), codes.clone()
    W = problem.weight(codebooks, codes)
    Q = W @ H
    best = (problem.energy(W), codebooks.clone(), codes.clone())
    for _ in range(config.qcnn_iters):
        for s in range(problem.subspaces):
            problem.update_codebook(s, codebooks, codes, W, Q)
            problem.update_assignments(s, codebooks, codes, W, Q)
        energy = problem.energy(W)
        if energy < best[0] - 1e-12 * abs(best[0]):
            best = (energy, codebooks.clone(), codes.clone())
        else:
            break
        Q = W @ H  # drop accumulated rounding
    return best[1].float(), best[2]


def _sample_rows(rows_f, rows_q, limit, generator):
    if rows_f.shape[0] <= limit:
        return rows_q, rows_f
    keep = torch.randperm(rows_f.shape[0], generator=generator)[:limit]
    return rows_q[keep], rows_f[keep]


@register_pq_method("qcnn")
def _qcnn(model, layers, config, calib_set, progress: bool = False):
    reference = copy.deepcopy(model).eval()
    images = calibration_batch(calib_set, config.calib_samples, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for index, (path, layer) in enumerate(tqdm(list(layers.items()), desc="q-cnn", leave=False, disable=not progress)):
        ref_layer = reference.get_submodule(path)
        rows_f = unfolded_rows(ref_layer, layer_inputs(reference, path, images))
        rows_q = unfolded_rows(layer, layer_inputs(model, path, images))
        rows_q, rows_f = _sample_rows(rows_f, rows_q, config.max_rows, generator)
        codebooks, codes = qcnn_fit(layer, rows_q, rows_f, config, seed=config.seed + 1000 * index)
        set_submodule(model, path, PQ_TYPES[type(layer)].from_layer(layer, codebooks, codes))


@torch.no_grad()
def layer_output_errors(reference: nn.Module, compressed: nn.Module, paths, images: torch.Tensor) -> dict:
    """Relative output error ``||y_c - y_f||^2 / ||y_f||^2`` of each layer inside the full networks."""
    errors = {}
    for path in paths:
        outputs = []
        for net in (reference, compressed):
            captured = []
            handle = net.get_submodule(path).register_forward_hook(lambda _m, _a, out: captured.append(out))
            try:
                net.eval()(images)
            finally:
                handle.remove()
            outputs.append(captured[0])
        errors[path] = float(((outputs[1] - outputs[0]) ** 2).sum() / (outputs[0] ** 2).sum().clamp(min=1e-30))
    return errors


__all__ = ["calibration_batch", "layer_inputs", "layer_output_errors", "qcnn_fit", "unfolded_rows"]
