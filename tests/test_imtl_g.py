"""`imtl_g`: equal projections on the unit gradients; matches the paper's closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._imtl_g import imtl_g
from tests.banks import bank_params, jacobian_bank

aggregate = jax.jit(weighting.aggregate, static_argnums=0)
METHOD = imtl_g()


def _closed_form(jac):
    """Eq. 9 of the paper (LibMTL's form): α_{2:} = g_1 Uᵀ (D Uᵀ)^{-1}, α_1 = 1 − Σ α_{2:}."""
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    diffs, unit_diffs = jac[:1] - jac[1:], units[:1] - units[1:]
    rest = jac[0] @ unit_diffs.T @ np.linalg.inv(diffs @ unit_diffs.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


@pytest.mark.parametrize("seed", range(8))
def test_equal_projections_and_closed_form(seed):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 7))
    jac = rng.normal(size=(num_tasks, 20)) + 0.5 * rng.normal(size=(1, 20))
    jac *= 10.0 ** rng.uniform(-2, 2, size=(num_tasks, 1))
    direction, weights, _ = aggregate(METHOD, jnp.asarray(jac, jnp.float32))
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    d = np.asarray(weights, np.float64) @ jac
    projections = units @ d
    np.testing.assert_allclose(projections, projections[0], rtol=1e-3)
    assert projections[0] > 0  # a descent direction for every task
    np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights, _closed_form(jac), rtol=2e-3, atol=1e-6)


def test_direction_ignores_per_task_scales():
    jac = jacobian_bank()["random4"]
    d1, _, _ = aggregate(METHOD, jnp.asarray(jac))
    d2, _, _ = aggregate(METHOD, jnp.asarray(jac * np.array([[1e-3], [1.0], [10.0], [1e2]])))
    cosine = float(d1 @ d2 / jnp.linalg.norm(d1) / jnp.linalg.norm(d2))
    assert cosine > 1 - 1e-5


def test_degenerate_cases():
    bank = jacobian_bank()
    # Identical rows: the mean.
    _, weights, _ = aggregate(METHOD, jnp.asarray(bank["identical"]))
    np.testing.assert_allclose(weights, 1 / 3, rtol=1e-4)
    # Opposite rows: equal projections force d = 0.
    direction, _, _ = aggregate(METHOD, jnp.asarray(bank["opposite"]))
    assert np.linalg.norm(direction) < 1e-4 * np.linalg.norm(bank["opposite"][0])
    # A zero row gets weight 0; the others still have equal projections.
    jac = bank["one_zero_row"].astype(np.float64)
    _, weights, _ = aggregate(METHOD, jnp.asarray(jac, jnp.float32))
    assert float(weights[2]) == 0.0
    d = np.asarray(weights, np.float64) @ jac
    projections = jac[:2] @ d / np.linalg.norm(jac[:2], axis=1)
    np.testing.assert_allclose(projections[0], projections[1], rtol=1e-4)


def test_residual_metric():
    method = METHOD
    update = jax.jit(method.update)
    full = jacobian_bank()["random4"]
    _, _, metrics = update(
        None, method.init(tuple("abcd")), key=None, gramian=jnp.asarray(full @ full.T)
    )
    assert float(metrics["solver_residual"]) < 1e-4
    # Six tasks in three dimensions: no exactly equal projections but d ≠ 0.
    low = jacobian_bank()["more_tasks_than_params"]
    _, _, metrics = update(
        None, method.init(tuple("abcdef")), key=None, gramian=jnp.asarray(low @ low.T)
    )
    assert float(metrics["solver_residual"]) > 1e-3


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_bank_finite(case):
    direction, weights, _ = aggregate(METHOD, jnp.asarray(jacobian_bank()[case]))
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
