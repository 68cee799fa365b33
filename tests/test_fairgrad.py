"""`fairgrad`: `(Gw)_t = w_t^{-1/α}` holds, closed forms, and α = 1 is Nash-MTL."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._fairgrad import fairgrad
from mtl_jax.weighting._nash_mtl import nash_mtl
from tests.banks import bank_params, jacobian_bank

aggregate = jax.jit(weighting.aggregate, static_argnums=0)
METHODS = {alpha: fairgrad(alpha=alpha) for alpha in (0.5, 1.0, 2.0)}
UPDATES = {alpha: jax.jit(method.update) for alpha, method in METHODS.items()}


def _random_jacobian(rng):
    num_tasks = int(rng.integers(2, 9))
    dim = int(rng.integers(num_tasks, 40))
    jac = rng.normal(size=(num_tasks, dim)) + rng.normal(size=(1, dim)) * rng.random()
    return jac * 10.0 ** rng.uniform(-1, 1, size=(num_tasks, 1))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(5))
def test_fairness_equation_residual(alpha, seed):
    jac = _random_jacobian(np.random.default_rng(seed)).astype(np.float64)
    overall = 10.0 ** np.random.default_rng(seed).uniform(-10, 10)  # one common scale
    jac = jac * overall
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    state = METHODS[alpha].init(("t",) * len(jac))
    weights, _, metrics = UPDATES[alpha](None, state, key=None, gramian=gram)
    w = np.asarray(weights, np.float64)
    assert np.all(w > 0)
    residual = np.max(np.abs((jac @ jac.T @ w) * w ** (1 / alpha) - 1.0))
    assert residual < 3e-4, residual
    assert float(metrics["solver_residual"]) < 3e-4
    assert int(metrics["solver_iterations"]) < 20


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_orthogonal_closed_form_and_scaling(alpha):
    # G = diag(n²): n² w = w^{-1/α} ⇒ w = n^{-2α/(1+α)}; G → sG ⇒ w → s^{-α/(1+α)} w.
    norms = np.array([0.5, 1.0, 3.0])
    gram = jnp.asarray(np.diag(norms**2), jnp.float32)
    method = METHODS[alpha]
    state = method.init(("a", "b", "c"))
    weights, _, _ = method.update(None, state, key=None, gramian=gram)
    np.testing.assert_allclose(weights, norms ** (-2 * alpha / (1 + alpha)), rtol=1e-4)
    scaled, _, _ = method.update(None, state, key=None, gramian=gram * 1e4)
    np.testing.assert_allclose(scaled, weights * 1e4 ** (-alpha / (1 + alpha)), rtol=1e-4)


@pytest.mark.parametrize("case", ["random4", "conflicting", "more_tasks_than_params", "opposite"])
def test_alpha_one_matches_nash_mtl(case):
    jac = jnp.asarray(jacobian_bank()[case])
    _, fair, _ = aggregate(METHODS[1.0], jac)
    _, nash, _ = aggregate(nash_mtl(max_norm=0.0), jac)
    np.testing.assert_allclose(fair, nash, rtol=1e-6)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_bank_finite(case):
    # α = 1 runs through the same code as nash_mtl's bank test.
    jac = jnp.asarray(jacobian_bank()[case])
    direction, weights, _ = aggregate(METHODS[2.0], jac)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
    assert np.all(np.asarray(weights) >= 0)


def test_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha must be positive"):
        fairgrad(alpha=0.0)
