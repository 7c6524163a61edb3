"""Factorisations of one layer into a chain of plain ``nn`` layers.

* :func:`svd_linear`: ``W ~ U_r S_r V_r^T`` -> ``Linear(in, r, bias=False)`` then
  ``Linear(r, out)``, with ``sqrt(S)`` split over both factors.
* :func:`spatial_svd_conv` (Jaderberg et al. 2014, scheme 2): a ``k x k`` conv
  becomes a ``k x 1`` conv to ``r`` channels then a ``1 x k`` conv, from the SVD
  of the weight reshaped to ``(in * kh) x (out * kw)``.
* :func:`tucker2_conv` (Kim et al. 2016): ``1x1`` to ``r_in`` channels, a
  ``k x k`` core conv to ``r_out`` channels, ``1x1`` back, from the HOSVD of the
  two channel modes refined by a few HOOI sweeps.

At full rank each is exact up to float rounding.  All results are
``nn.Sequential`` of standard layers, so they save, prune, quantize and export
like any other layer.
"""

from __future__ import annotations

import torch
from torch import nn


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of the squared sum."""
    squares = singular_values.double() ** 2
    kept = torch.cumsum(squares, 0) / squares.sum().clamp(min=1e-30)
    return int(min(int((kept < energy - 1e-12).sum()) + 1, singular_values.numel()))


def linear_spectrum(layer: nn.Linear) -> torch.Tensor:
    return torch.linalg.svdvals(layer.weight.detach().double())


@torch.no_grad()
def svd_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    U, S, Vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    rank = max(1, min(int(rank), S.numel()))
    root = S[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first.weight.copy_(root[:, None] * Vh[:rank])
    second.weight.copy_(U[:, :rank] * root[None, :])
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def _spatial_matrix(conv: nn.Conv2d) -> torch.Tensor:
    out, cin, kh, kw = conv.weight.shape
    return conv.weight.detach().double().permute(1, 2, 0, 3).reshape(cin * kh, out * kw)


def spatial_spectrum(conv: nn.Conv2d) -> torch.Tensor:
    return torch.linalg.svdvals(_spatial_matrix(conv))


def spatial_svd_supported(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1 and min(conv.kernel_size) > 1
            and isinstance(conv.padding, tuple))


@torch.no_grad()
def spatial_svd_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    out, cin, kh, kw = conv.weight.shape
    U, S, Vh = torch.linalg.svd(_spatial_matrix(conv), full_matrices=False)
    rank = max(1, min(int(rank), S.numel()))
    root = S[:rank].sqrt()
    vertical = nn.Conv2d(cin, rank, (kh, 1), stride=(conv.stride[0], 1), padding=(conv.padding[0], 0),
                         dilation=(conv.dilation[0], 1), bias=False)
    horizontal = nn.Conv2d(rank, out, (1, kw), stride=(1, conv.stride[1]), padding=(0, conv.padding[1]),
                           dilation=(1, conv.dilation[1]), bias=conv.bias is not None)
    # U[(c, i), r] -> vertical[r, c, i, 0];  Vh[r, (o, j)] -> horizontal[o, r, 0, j]
    vertical.weight.copy_((U[:, :rank] * root).reshape(cin, kh, rank).permute(2, 0, 1)[..., None])
    horizontal.weight.copy_((root[:, None] * Vh[:rank]).reshape(rank, out, kw).permute(1, 0, 2)[:, :, None, :])
    if conv.bias is not None:
        horizontal.bias.copy_(conv.bias)
    return nn.Sequential(vertical, horizontal)


def tucker_spectra(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of the output-channel and input-channel unfoldings."""
    weight = conv.weight.detach().double()
    out, cin = weight.shape[:2]
    return (torch.linalg.svdvals(weight.reshape(out, -1)),
            torch.linalg.svdvals(weight.transpose(0, 1).reshape(cin, -1)))


def tucker2_supported(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.groups == 1


def _leading(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    return torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


@torch.no_grad()
def tucker2_conv(conv: nn.Conv2d, rank_out: int, rank_in: int, sweeps: int = 3) -> nn.Sequential:
    weight = conv.weight.detach().double()
    out, cin, kh, kw = weight.shape
    rank_out, rank_in = max(1, min(int(rank_out), out)), max(1, min(int(rank_in), cin))
    U_in = _leading(weight.transpose(0, 1).reshape(cin, -1), rank_in)
    U_out = _leading(weight.reshape(out, -1), rank_out)
    for _ in range(sweeps):  # HOOI: each factor from the weight projected on the other
        projected = torch.einsum("ocij,cr->orij", weight, U_in)
        U_out = _leading(projected.reshape(out, -1), rank_out)
        projected = torch.einsum("ocij,os->scij", weight, U_out)
        U_in = _leading(projected.transpose(0, 1).reshape(cin, -1), rank_in)
    core = torch.einsum("ocij,os,cr->srij", weight, U_out, U_in)
    first = nn.Conv2d(cin, rank_in, 1, bias=False)
    middle = nn.Conv2d(rank_in, rank_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False)
    last = nn.Conv2d(rank_out, out, 1, bias=conv.bias is not None)
    first.weight.copy_(U_in.t()[:, :, None, None])
    middle.weight.copy_(core)
    last.weight.copy_(U_out[:, :, None, None])
    if conv.bias is not None:
        last.bias.copy_(conv.bias)
    return nn.Sequential(first, middle, last)
