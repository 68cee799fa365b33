"""`cagrad`: the dual is solved to optimality and the primal stays in the conflict-averse ball."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from mtl_jax import weighting
from mtl_jax.weighting._cagrad import cagrad, cagrad_dual
from tests.banks import bank_params, jacobian_bank

aggregate = jax.jit(weighting.aggregate, static_argnums=0)
UNSCALED = cagrad(rescale=0, tol=1e-6)
solve_dual = jax.jit(cagrad_dual, static_argnames=("max_iters", "tol"))


def _dual_objective(w, gram, c):
    mean = np.full(len(gram), 1.0 / len(gram))
    radius = c * np.sqrt(max(mean @ gram @ mean, 0.0))
    return w @ gram @ mean + radius * np.sqrt(max(w @ gram @ w, 0.0))


def _random_jacobian(rng):
    num_tasks = int(rng.integers(2, 9))
    dim = int(rng.integers(2, 30))
    return rng.normal(size=(num_tasks, dim)) + rng.normal(size=(1, dim)) * rng.random() * 2


@pytest.mark.parametrize("seed", range(8))
def test_dual_matches_a_reference_solver(seed):
    rng = np.random.default_rng(seed)
    jac = _random_jacobian(rng)
    gram = jac @ jac.T
    gram /= np.max(np.diagonal(gram))
    result = solve_dual(jnp.asarray(gram, jnp.float32), 0.5, max_iters=500, tol=1e-6)
    assert int(result.iterations) < 500 and float(result.gap) <= 1e-6
    num_tasks = len(gram)
    reference = minimize(
        _dual_objective,
        np.full(num_tasks, 1.0 / num_tasks),
        args=(gram, 0.5),
        bounds=[(0.0, 1.0)] * num_tasks,
        constraints={"type": "eq", "fun": lambda w: 1.0 - w.sum()},
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    ours = _dual_objective(np.asarray(result.weights, np.float64), gram, 0.5)
    assert ours <= reference.fun + 1e-5


@pytest.mark.parametrize("seed", range(6))
def test_primal_maximises_the_worst_improvement_in_the_ball(seed):
    rng = np.random.default_rng(100 + seed)
    jac = _random_jacobian(rng)
    direction, _, _ = aggregate(UNSCALED, jnp.asarray(jac, jnp.float32))
    d = np.asarray(direction, np.float64)
    g0 = jac.mean(axis=0)
    radius = 0.5 * np.linalg.norm(g0)
    # ‖d − g₀‖ = c‖g₀‖ (the dual's g_w is non-zero here).
    np.testing.assert_allclose(np.linalg.norm(d - g0), radius, rtol=1e-4)
    # No point of the ball does better on the worst task (Eq. 4's primal).
    samples = rng.normal(size=(4000, jac.shape[1]))
    samples *= (radius * rng.random((4000, 1)) ** 0.2) / np.linalg.norm(samples, axis=1)[:, None]
    best_sampled = np.max(np.min((g0 + samples) @ jac.T, axis=1))
    assert np.min(jac @ d) >= best_sampled - 1e-4 * np.linalg.norm(jac, axis=1).max() ** 2


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_bank_stays_in_the_ball(case):
    jac = jacobian_bank()[case].astype(np.float64)
    direction, weights, _ = aggregate(UNSCALED, jnp.asarray(jac, jnp.float32))
    assert np.all(np.isfinite(weights))
    g0 = jac.mean(axis=0)
    d = np.asarray(weights, np.float64) @ jac
    scale = np.linalg.norm(jac, axis=1).max()
    assert np.linalg.norm(d - g0) <= 0.5 * np.linalg.norm(g0) * (1 + 1e-3) + 1e-6 * scale


def test_c_zero_gives_the_mean_gradient():
    # g₀ is the mean (LibMTL, reference code); every rescale divisor is 1 at c = 0.
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    direction, weights, _ = aggregate(cagrad(c=0.0), jac)
    np.testing.assert_allclose(weights, 1.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(direction, jac.mean(axis=0), rtol=1e-5, atol=1e-7)


def test_rescale_divides_the_direction():
    jac = jnp.asarray(jacobian_bank()["random4"])
    base, _, _ = aggregate(cagrad(c=0.4, rescale=0), jac)
    for rescale, divisor in ((1, 1 + 0.4**2), (2, 1.4)):
        direction, _, _ = aggregate(cagrad(c=0.4, rescale=rescale), jac)
        np.testing.assert_allclose(direction, base / divisor, rtol=1e-5, atol=1e-7)


def test_opposite_gradients_give_the_mean():
    jac = jnp.asarray([[1.0, 2.0], [-1.0, -2.0]])
    direction, weights, _ = aggregate(cagrad(), jac)
    np.testing.assert_allclose(weights, [0.5 / 1.25, 0.5 / 1.25], rtol=1e-6)
    np.testing.assert_allclose(direction, 0.0, atol=1e-6)


def test_reports_solver_metrics_under_jit():
    method = cagrad()
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(4, 10))
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    _, _, metrics = jax.jit(method.update)(None, method.init(tuple("abcd")), key=None, gramian=gram)
    assert 0 < int(metrics["solver_iterations"]) < 100
    assert float(metrics["solver_gap"]) <= 1e-5


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="rescale must be one of"):
        cagrad(rescale=3)
    with pytest.raises(ValueError, match="c must be non-negative"):
        cagrad(c=-0.1)
