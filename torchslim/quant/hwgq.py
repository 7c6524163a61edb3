r"""Half-wave Gaussian quantizer (HWGQ) levels, computed by Lloyd's algorithm.

After BatchNorm a pre-activation is close to :math:`\mathcal N(0, 1)`.  The ReLU
keeps its positive half, so the levels that minimise the mean squared error are
the Lloyd-Max quantizer of the half-normal density :math:`p(x) = 2\varphi(x)`,
:math:`x \ge 0`, plus the level 0 for every :math:`x \le 0` (Cai, He, Sun,
Vasconcelos, "Deep Learning with Low Precision by Half-wave Gaussian
Quantization", CVPR 2017).

Lloyd's algorithm alternates the two optimality conditions:

* thresholds are midpoints of neighbouring levels, :math:`t_i = (q_{i-1} + q_i) / 2`;
* each level is the centroid of its cell,
  :math:`q_i = E[x \mid t_i < x \le t_{i+1}] = (\varphi(t_i) - \varphi(t_{i+1})) / (\Phi(t_{i+1}) - \Phi(t_i))`
  (closed form for a Gaussian, so no numerical integration is needed).

The *uniform* variant keeps the levels equally spaced, :math:`q_i = c + iD`
(for 2 bits: 0, b - D, b, b + D), and solves the centroid step as a 2x2 least
squares problem in :math:`(c, D)`.  Both use :math:`2^k - 1` positive levels for
``k`` bits.

The *zero-anchored uniform* variant uses all :math:`2^k` levels :math:`iD`,
:math:`i = 0 .. 2^k - 1`, with the thresholds at the midpoints :math:`(i - 1/2) D`, so
level 0 also takes :math:`0 < x \le D/2`.  Its step minimises the half-normal MSE,
:math:`D = \sum_i i\,E[x; \mathrm{cell}_i] / \sum_i i^2 P(\mathrm{cell}_i)`, iterated with
the cells (Lloyd's two steps with the shape fixed).  Integer multiples of one step
let binary kernels use :math:`k` binary-weighted bit planes instead of
:math:`2^k - 1` thermometer planes.
"""

from __future__ import annotations

import functools
import math

__all__ = ["lloyd_max_half_normal", "uniform_half_normal", "zero_uniform_half_normal", "hwgq_levels",
           "zero_uniform_levels", "half_normal_mse"]

MAX_BITS = 4


def _pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 1.0 if math.isinf(x) else 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _cells(levels):
    """Cell edges of the positive levels: 0, midpoints, infinity."""
    mids = [(a + b) / 2 for a, b in zip(levels[:-1], levels[1:])]
    return [0.0, *mids, math.inf]


def _moments(lo: float, hi: float):
    """Half-normal mass, first and second moments of the cell (lo, hi]."""
    mass = 2 * (_cdf(hi) - _cdf(lo))
    first = 2 * (_pdf(lo) - _pdf(hi))
    hi_term = 0.0 if math.isinf(hi) else hi * _pdf(hi)
    second = mass + 2 * (lo * _pdf(lo) - hi_term)  # integral of x^2 * 2 phi(x)
    return mass, first, second


def half_normal_mse(levels) -> float:
    """Mean squared error of quantizing the half-normal to ``levels`` (nearest level)."""
    total = 0.0
    edges = _cells(levels)
    for q, lo, hi in zip(levels, edges[:-1], edges[1:]):
        mass, first, second = _moments(lo, hi)
        total += second - 2 * q * first + q * q * mass
    return total


@functools.lru_cache(maxsize=None)
def lloyd_max_half_normal(count: int, tol: float = 1e-13, max_iter: int = 100000) -> tuple[float, ...]:
    """The ``count`` Lloyd-Max levels of the unit half-normal, ascending."""
    if count < 1:
        raise ValueError("need at least one level")
    levels = [3.0 * (i + 0.5) / count for i in range(count)]
    for _ in range(max_iter):
        edges = _cells(levels)
        new = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            mass, first, _ = _moments(lo, hi)
            new.append(first / mass)
        shift = max(abs(a - b) for a, b in zip(levels, new))
        levels = new
        if shift < tol:
            break
    return tuple(levels)


@functools.lru_cache(maxsize=None)
def uniform_half_normal(count: int, tol: float = 1e-13, max_iter: int = 100000) -> tuple[float, ...]:
    """``count`` equally spaced levels ``c + i D`` minimising the half-normal MSE."""
    if count == 1:
        return lloyd_max_half_normal(1)
    offset, step = 0.5, 1.0
    for _ in range(max_iter):
        levels = [offset + i * step for i in range(count)]
        edges = _cells(levels)
        # Normal equations of sum_i int_cell (x - c - i D)^2 p(x) dx in (c, D).
        a11 = a12 = a22 = b1 = b2 = 0.0
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            mass, first, _ = _moments(lo, hi)
            a11 += mass
            a12 += i * mass
            a22 += i * i * mass
            b1 += first
            b2 += i * first
        det = a11 * a22 - a12 * a12
        new_offset = (b1 * a22 - a12 * b2) / det
        new_step = (a11 * b2 - a12 * b1) / det
        shift = max(abs(new_offset - offset), abs(new_step - step))
        offset, step = new_offset, new_step
        if shift < tol:
            break
    return tuple(offset + i * step for i in range(count))


@functools.lru_cache(maxsize=None)
def zero_uniform_half_normal(count: int, tol: float = 1e-13, max_iter: int = 100000) -> float:
    """The step ``D`` of the levels ``0, D, .., (count - 1) D`` minimising the half-normal MSE."""
    if count < 2:
        raise ValueError("need at least two levels")
    step = 3.0 / count
    for _ in range(max_iter):
        edges = _cells([i * step for i in range(count)])
        num = den = 0.0
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            mass, first, _ = _moments(lo, hi)
            num += i * first
            den += i * i * mass
        new = num / den
        if abs(new - step) < tol:
            return new
        step = new
    return step


def zero_uniform_levels(bits: int) -> tuple[list[float], list[float]]:
    """Levels ``[0, D, .., (2**bits - 1) D]`` and thresholds ``[D/2, 3D/2, ..]`` (``bits`` 1 to 4)."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"HWGQ supports 1 to {MAX_BITS} bits, got {bits}")
    count = 2 ** bits
    step = zero_uniform_half_normal(count)
    return [i * step for i in range(count)], [(i - 0.5) * step for i in range(1, count)]


def hwgq_levels(bits: int, uniform: bool = False) -> tuple[list[float], list[float]]:
    """Levels ``[0, q_1..q_m]`` and thresholds ``[0, t_1..t_{m-1}]`` for ``bits`` (1 to 4).

    ``x <= 0`` maps to 0 and ``t_i < x <= t_{i+1}`` to ``q_i``; ``m = 2**bits - 1``.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"HWGQ supports 1 to {MAX_BITS} bits, got {bits}")
    count = 2 ** bits - 1
    positive = list(uniform_half_normal(count) if uniform else lloyd_max_half_normal(count))
    return [0.0, *positive], _cells(positive)[:-1]
