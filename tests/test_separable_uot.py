"""The separable-kernel UOT solver against POT's dense solver, on the same problems."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_attrib.errors import MethodParameterError
from cxr_attrib_plugins.medfocus.transport import (
    GridMeasure,
    NoSupportError,
    cost_matrix,
    grid_measure,
    grid_scale,
    solve_uot,
)

EPSILONS = (0.01, 0.05, 0.2)
MARGINALS = (0.1, 1.0, math.inf)


def _random_measure(rng: np.random.Generator, grid: int, most: int) -> GridMeasure:
    """A random support (1 to ``most`` cells, clustered or scattered) with random masses summing to 1."""
    count = int(rng.integers(1, min(grid * grid, most) + 1))
    if rng.random() < 0.5:  # scattered over the grid
        cells = rng.choice(grid * grid, count, replace=False)
    else:  # a blob around a random centre, like an image's bright region
        centre = rng.integers(0, grid, 2)
        rows, cols = np.divmod(np.arange(grid * grid), grid)
        near = np.argsort((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 + rng.random(grid * grid))
        cells = near[:count]
    mass = rng.random(count) + 0.05
    return GridMeasure(grid, np.sort(cells), mass / mass.sum())


def _problems(count: int, seed: int = 22):
    """``count`` problems: g in 8..64, every (epsilon, marginal) pair in turn, supports of <= 200 cells
    (POT's dense solver must run on each in a few milliseconds; the separable solver covers the whole grid)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        grid = int(rng.integers(8, 65))
        yield (_random_measure(rng, grid, 200), _random_measure(rng, grid, 200),
               EPSILONS[k % 3], MARGINALS[(k // 3) % 3])


def test_separable_plans_equal_pots_on_200_random_problems():
    """Same plan, objective, cost, iteration count and convergence flag as POT's scaling solver.

    At most 200 iterations (not 500) to keep the test fast: most problems stop on the tolerance
    before that, the rest are compared at the same unconverged iterate, which is a stricter check.
    """
    worst_plan = worst_objective = 0.0
    start = time.perf_counter()
    stopped = 0
    for source, target, epsilon, marginal in _problems(200):
        settings = {"epsilon": epsilon, "marginal": marginal, "max_iter": 200}
        reference = solve_uot(source, target, solver="sinkhorn", **settings)
        stopped += reference.converged
        runs = [solve_uot(source, target, solver="separable", **settings)]
        if epsilon < 0.02:  # the default path runs these in the log domain: check it too
            runs.append(solve_uot(source, target, **settings))
            assert runs[-1].solver == "separable_log"
        top = reference.plan.max()
        for run in runs:
            gap = float(np.abs(run.plan - reference.plan).max() / top)
            objective_gap = abs(run.objective - reference.objective) / abs(reference.objective)
            where = f"g={source.grid}, eps={epsilon}, lambda={marginal}, {run.solver}"
            assert gap <= 1e-6, f"plan differs by {gap:.2e} ({where})"
            assert objective_gap <= 1e-8, f"objective differs by {objective_gap:.2e} ({where})"
            assert abs(run.cost - reference.cost) <= 1e-8 * max(abs(reference.cost), 1e-300), where
            assert run.iterations == reference.iterations and run.converged == reference.converged, where
            worst_plan, worst_objective = max(worst_plan, gap), max(worst_objective, objective_gap)
    print(f"200 problems ({stopped} stopped on the tolerance) in {time.perf_counter() - start:.1f} s: "
          f"worst plan gap {worst_plan:.1e}, worst objective gap {worst_objective:.1e}")
    assert stopped >= 100  # the stopping rule itself is exercised


def test_torch_backend_gives_the_numpy_scalings_in_both_domains():
    source, target, epsilon, marginal = next(_problems(1, seed=5))
    for solver in ("separable", "separable_log"):
        on_numpy = solve_uot(source, target, epsilon=epsilon, marginal=marginal, solver=solver)
        on_torch = solve_uot(source, target, epsilon=epsilon, marginal=marginal, solver=solver, device="cpu")
        assert on_torch.backend == "torch:cpu" and on_torch.iterations == on_numpy.iterations
        assert np.allclose(on_torch.plan, on_numpy.plan, rtol=1e-12, atol=0)
        assert math.isclose(on_torch.objective, on_numpy.objective, rel_tol=1e-12)


@pytest.mark.parametrize("solver", ["separable", "separable_log"])
def test_pushing_weights_through_the_factorised_plan_is_the_dense_product(solver):
    source, target, _, _ = next(_problems(1, seed=9))
    run = solve_uot(source, target, solver=solver)
    weights = np.random.default_rng(0).random((3, source.cells.size))
    dense = run.plan
    assert np.allclose(run.transport.push(weights), weights @ dense, rtol=1e-10, atol=1e-300)
    assert np.allclose(run.transport.incoming(), dense.sum(axis=0), rtol=1e-10, atol=1e-300)
    assert math.isclose(run.mass, dense.sum(), rel_tol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_grid_scale_is_numpys_90th_percentile_of_the_squared_distances(grid, seed):
    rng = np.random.default_rng(seed)
    source, target = _random_measure(rng, grid, 300), _random_measure(rng, grid, 300)
    squared = ((source.positions[:, None, :] - target.positions[None, :, :]) ** 2).sum(-1)
    expected = float(np.quantile(squared, 0.9))
    assert math.isclose(grid_scale(source, target), expected if expected > 0 else 1.0, rel_tol=1e-13)
    assert np.allclose(cost_matrix(source, target) * grid_scale(source, target), squared, rtol=1e-13)


# ------------------------------------------------------------------------ bad input


def test_measures_on_different_grids_are_refused():
    with pytest.raises(MethodParameterError, match="different grids"):
        solve_uot(GridMeasure(4, np.array([0]), np.ones(1)), GridMeasure(5, np.array([0]), np.ones(1)))


def test_a_grid_of_one_cell_and_all_mass_on_one_cell_give_finite_plans():
    one = GridMeasure(1, np.array([0]), np.ones(1))
    single = solve_uot(one, one)
    assert single.converged and np.isfinite(single.plan).all() and single.problem() is None
    spike = grid_measure(np.pad(np.ones((1, 1)), ((3, 4), (5, 2))), 8)
    spread = grid_measure(np.random.default_rng(1).random((8, 8)), 8)
    for run in (solve_uot(spike, spread), solve_uot(spread, spike), solve_uot(spike, spike)):
        assert run.converged and np.isfinite(run.plan).all() and run.problem() is None


def test_nan_in_an_image_is_a_clear_error():
    image = np.random.default_rng(2).random((16, 16))
    image[3, 4] = np.nan
    with pytest.raises(NoSupportError, match="NaN"):
        grid_measure(image, 8)


def test_epsilon_below_the_supported_range_is_refused_with_the_range():
    source, target, _, _ = next(_problems(1))
    with pytest.raises(MethodParameterError, match=r"supported range is \[0.001, inf\)"):
        solve_uot(source, target, epsilon=1e-4)


def test_a_degenerate_or_unconverged_plan_is_a_problem_never_a_result():
    source, target, _, _ = next(_problems(1, seed=3))
    short = solve_uot(source, target, epsilon=0.01, marginal=math.inf, max_iter=2)
    assert not short.converged and "did not converge" in short.problem()
    # one cell to the far corner with a weak marginal penalty: the optimum moves ~exp(-C / (2 lambda)) of mass
    far = solve_uot(GridMeasure(64, np.array([0]), np.ones(1)), GridMeasure(64, np.array([4095]), np.ones(1)),
                    epsilon=0.05, marginal=0.01)
    assert far.converged and far.mass < 1e-6 and "degenerate plan" in far.problem()


def test_pots_dense_reference_refuses_a_support_it_cannot_hold_and_the_separable_solver_takes_it():
    full = grid_measure(np.random.default_rng(4).random((128, 128)) + 0.5, 64)
    assert full.cells.size == 64 * 64  # no cap on the support
    with pytest.raises(MethodParameterError, match=r"at most 4000 support cells per image, got 4096"):
        solve_uot(full, full, solver="pot")
    assert solve_uot(full, full).problem() is None
