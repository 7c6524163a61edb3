import math

import numpy as np
import pytest
import torch

from torchslim.quant.hwgq import (half_normal_mse, hwgq_levels, lloyd_max_half_normal, uniform_half_normal,
                                  zero_uniform_levels)
from torchslim.quant.modules import ActQuant


def _numeric_lloyd(count, tol=1e-13, max_iter=100000):
    """Lloyd's algorithm with numerical integration on a grid: independent of the closed form.

    The cumulative mass and first moment are tabulated once, so an iteration is two
    interpolations; it runs to convergence (15 levels take about 2300 iterations).
    """
    grid = np.linspace(0, 12, 1200001)
    density = 2 * np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi)
    step = grid[1] - grid[0]
    mass = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * step)])
    moment = np.concatenate([[0], np.cumsum((grid[1:] * density[1:] + grid[:-1] * density[:-1]) / 2 * step)])
    levels = np.linspace(0.2, 2.5, count)
    for _ in range(max_iter):
        edges = np.concatenate([[0], (levels[1:] + levels[:-1]) / 2, [grid[-1]]])
        m, f = np.interp(edges, grid, mass), np.interp(edges, grid, moment)
        new = np.diff(f) / np.diff(m)
        shift, levels = np.abs(new - levels).max(), new
        if shift < tol:
            return levels
    raise AssertionError(f"grid Lloyd iteration did not converge for {count} levels")


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_max_matches_numerical_solution(bits):
    count = 2 ** bits - 1
    assert np.allclose(lloyd_max_half_normal(count), _numeric_lloyd(count), rtol=0, atol=1e-7)


def test_one_bit_level_is_half_normal_mean():
    assert lloyd_max_half_normal(1)[0] == pytest.approx(np.sqrt(2 / np.pi), abs=1e-12)


def test_lloyd_max_is_a_local_optimum_and_beats_uniform():
    for count in (3, 7, 15):
        levels = np.array(lloyd_max_half_normal(count))
        base = half_normal_mse(levels)
        for i in range(count):
            for step in (-1e-3, 1e-3):
                moved = levels.copy()
                moved[i] += step
                assert half_normal_mse(moved) >= base
        assert base < half_normal_mse(uniform_half_normal(count))


def _quadrature_lloyd_max(count):
    """The Lloyd-Max levels from scipy alone: adaptive quadrature of the half-normal over each
    nearest-level cell and a root of the MSE's gradient, ``q_i P_i - M_i = 0`` for every level
    (``P_i``, ``M_i``: the cell's mass and first moment).  Powell's hybrid method needs a few
    dozen evaluations, against thousands of Lloyd iterations, so 15 levels take milliseconds."""
    integrate, optimize = pytest.importorskip("scipy.integrate"), pytest.importorskip("scipy.optimize")
    norm = 2 / math.sqrt(2 * math.pi)

    def gradient(levels):
        edges = [0.0, *((levels[1:] + levels[:-1]) / 2), math.inf]
        cells = list(zip(edges[:-1], edges[1:]))
        mass = [integrate.quad(lambda x: norm * math.exp(-x * x / 2), a, b, epsabs=1e-15, epsrel=1e-13)[0]
                for a, b in cells]
        first = [integrate.quad(lambda x: x * norm * math.exp(-x * x / 2), a, b, epsabs=1e-15, epsrel=1e-13)[0]
                 for a, b in cells]
        return levels * np.array(mass) - np.array(first)

    result = optimize.root(gradient, np.linspace(0.3, 2.5, count), method="hybr", options={"xtol": 1e-13})
    assert result.success, result.message
    return np.sort(result.x)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_scipy_quadrature_solution_agrees(bits):
    count = 2 ** bits - 1
    assert np.allclose(lloyd_max_half_normal(count), _quadrature_lloyd_max(count), rtol=0, atol=1e-9)


def test_uniform_two_bit_variant_has_equal_steps_and_optimal_spacing():
    levels, thresholds = hwgq_levels(2, uniform=True)
    assert levels[0] == 0 and len(levels) == 4
    b, step = levels[2], levels[3] - levels[2]
    assert levels[1] == pytest.approx(b - step) and levels[3] == pytest.approx(b + step)
    base = half_normal_mse(levels[1:])
    for db, dd in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        moved = [b + db - (step + dd), b + db, b + db + step + dd]
        assert half_normal_mse(moved) >= base


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hwgq_forward_is_nearest_level_and_half_wave(bits, uniform):
    act = ActQuant("hwgq_uniform" if uniform else "hwgq", bits)
    levels = torch.tensor(hwgq_levels(bits, uniform)[0])
    x = torch.randn(10000) * 2
    y = act(x)
    assert torch.all(y[x <= 0] == 0)
    positive = x > 0
    nearest = levels[1:][(x[positive, None] - levels[1:]).abs().argmin(1)]
    assert torch.equal(y[positive], nearest)
    assert len(y.unique()) == 2 ** bits


def test_hwgq_backward_is_clipped_relu():
    act = ActQuant("hwgq_uniform", 2)
    top = float(act.levels[-1])
    x = torch.tensor([-1.0, 0.0, 0.5, top, top + 0.01, 5.0], requires_grad=True)
    act(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_zero_uniform_step_is_least_squares_and_forward_is_nearest_multiple(bits):
    levels, thresholds = zero_uniform_levels(bits)
    step = levels[1]
    assert levels == pytest.approx([i * step for i in range(2 ** bits)])
    assert thresholds == pytest.approx([(i - 0.5) * step for i in range(1, 2 ** bits)])
    best = half_normal_mse(levels)
    for factor in (0.98, 1.02):
        assert half_normal_mse([v * factor for v in levels]) > best
    act = ActQuant("hwgq_zero_uniform", bits)
    x = torch.randn(10000) * 2
    expected = (x.clamp_min(0) / step).round().clamp(max=2 ** bits - 1) * step
    assert torch.allclose(act(x), expected)


def test_zero_uniform_2bit_beats_lloyd_max_hwgq_on_the_half_normal():
    # four levels on x > 0 (one of them 0) against three positive levels
    assert zero_uniform_levels(2)[0][1] == pytest.approx(0.6508, abs=1e-4)
    assert half_normal_mse(zero_uniform_levels(2)[0]) == pytest.approx(0.04686, abs=1e-5)
    assert half_normal_mse(zero_uniform_levels(2)[0]) < half_normal_mse(hwgq_levels(2)[0][1:])
