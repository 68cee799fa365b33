"""`nash_mtl`: the bargaining equation `α ⊙ Gα = 1` holds; clipping and reuse behave."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._nash_mtl import nash_mtl
from tests.banks import bank_params, jacobian_bank

aggregate = jax.jit(weighting.aggregate, static_argnums=0)
UNCLIPPED = nash_mtl(max_norm=0.0)
DEFAULT = nash_mtl()
update_unclipped = jax.jit(UNCLIPPED.update)


def _random_jacobian(rng):
    num_tasks = int(rng.integers(2, 9))
    dim = int(rng.integers(num_tasks, 40))
    jac = rng.normal(size=(num_tasks, dim)) + rng.normal(size=(1, dim)) * rng.random()
    return jac * 10.0 ** rng.uniform(-2, 2, size=(num_tasks, 1))


@pytest.mark.parametrize("seed", range(10))
def test_bargaining_equation_residual(seed):
    jac = _random_jacobian(np.random.default_rng(seed)).astype(np.float64)
    state = UNCLIPPED.init(weighting.default_task_names(len(jac)))
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    alpha, _, metrics = update_unclipped(None, state, key=None, gramian=gram)
    alpha = np.asarray(alpha, np.float64)
    assert np.all(alpha > 0)
    residual = np.max(np.abs(alpha * (jac @ jac.T @ alpha) - 1.0))
    assert residual < 2e-4, residual
    assert float(metrics["solver_residual"]) < 2e-4
    assert int(metrics["solver_iterations"]) < 20
    # Σ α_t (Gα)_t = T, so ‖d‖ = √T whatever the gradients' scale.
    np.testing.assert_allclose(float(metrics["direction_norm"]), np.sqrt(len(jac)), rtol=1e-3)


def test_two_tasks_closed_form():
    # For two tasks with cosine ρ, β_1 = β_2 = 1/√(1+ρ) and α_t = β_t / ‖g_t‖.
    g1, g2 = np.array([3.0, 0.0]), np.array([-1.0, 2.0])
    rho = g1 @ g2 / np.linalg.norm(g1) / np.linalg.norm(g2)
    _, alpha, _ = aggregate(UNCLIPPED, jnp.asarray([g1, g2], jnp.float32))
    expected = 1 / np.sqrt(1 + rho) / np.array([np.linalg.norm(g1), np.linalg.norm(g2)])
    np.testing.assert_allclose(alpha, expected, rtol=1e-4)


def test_direction_is_invariant_to_the_gradient_scale():
    jac = jnp.asarray(jacobian_bank()["random4"])
    d1, w1, _ = aggregate(UNCLIPPED, jac)
    d2, w2, _ = aggregate(UNCLIPPED, jac * 1e-6)
    np.testing.assert_allclose(w2, w1 * 1e6, rtol=1e-4)
    np.testing.assert_allclose(d2, d1, rtol=1e-4, atol=1e-6)


def test_max_norm_scales_the_weights():
    jac = jacobian_bank()["random4"].astype(np.float64)
    direction, weights, _ = aggregate(nash_mtl(max_norm=0.5), jnp.asarray(jac, jnp.float32))
    _, alpha, _ = aggregate(UNCLIPPED, jnp.asarray(jac, jnp.float32))
    np.testing.assert_allclose(np.linalg.norm(direction), 0.5, rtol=1e-4)
    np.testing.assert_allclose(weights, np.asarray(alpha) * 0.5 / 2.0, rtol=1e-4)  # ‖d‖ = √4
    # A norm already below max_norm is left alone.
    _, loose, _ = aggregate(nash_mtl(max_norm=10.0), jnp.asarray(jac, jnp.float32))
    np.testing.assert_allclose(loose, alpha, rtol=1e-6)


def test_update_every_reuses_the_cached_weights():
    method = nash_mtl(update_every=3, max_norm=0.0)
    update = jax.jit(method.update)
    state = method.init(("a", "b", "c"))
    rng = np.random.default_rng(0)
    history = []
    for _ in range(4):
        jac = rng.normal(size=(3, 8))
        weights, state, metrics = update(
            None, state, key=None, gramian=jnp.asarray(jac @ jac.T, jnp.float32)
        )
        history.append((np.asarray(weights), int(metrics["solver_iterations"])))
    assert history[0][1] > 0 and history[3][1] > 0  # steps 0 and 3 solve
    assert history[1][1] == 0 and history[2][1] == 0  # steps 1 and 2 reuse
    np.testing.assert_array_equal(history[1][0], history[0][0])
    np.testing.assert_array_equal(history[2][0], history[0][0])
    assert not np.allclose(history[3][0], history[0][0])
    assert int(state.step) == 4


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_bank_finite_and_bounded(case):
    jac = jacobian_bank()[case].astype(np.float64)
    direction, weights, _ = aggregate(DEFAULT, jnp.asarray(jac, jnp.float32))
    assert np.all(np.isfinite(weights)) and np.all(np.asarray(weights) >= 0)
    assert np.linalg.norm(np.asarray(weights, np.float64) @ jac) <= 1.0 + 1e-3


def test_pareto_stationary_gradients_give_a_vanishing_direction():
    # Opposite gradients: no direction helps both, the equation has no solution.
    jac = jnp.asarray(jacobian_bank()["opposite"])
    direction, _, _ = aggregate(UNCLIPPED, jac)
    assert np.linalg.norm(direction) < 1e-2 * np.linalg.norm(jac[0])


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="update_every must be a positive integer"):
        nash_mtl(update_every=0)
    with pytest.raises(ValueError, match="tol must be positive"):
        nash_mtl(tol=0.0)
