"""`pcgrad`: the Gramian-only reweighting equals the projection algorithm on explicit rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._pcgrad import pcgrad, pcgrad_weights, task_orders
from tests.banks import bank_params, jacobian_bank

# One compilation per method and shape (the method is static: a tuple of functions).
aggregate = jax.jit(weighting.aggregate, static_argnums=0)
METHOD = pcgrad()
KEY = jax.random.PRNGKey(0)
weights_from_orders = jax.jit(pcgrad_weights)


def _project_rows(jac, orders):
    """PCGrad on explicit gradient rows (float64), LibMTL's loop with the given orders."""
    jac = np.asarray(jac, np.float64)
    projected = jac.copy()
    for i in range(jac.shape[0]):
        for j in orders[i]:
            inner = projected[i] @ jac[j]
            if inner < 0:
                projected[i] -= inner / (jac[j] @ jac[j]) * jac[j]
    return projected


def _conflicting_jacobian(rng, num_tasks, dim):
    # A weak common component keeps some pairs aligned and others conflicting.
    return rng.normal(size=(num_tasks, dim)) + 0.3 * rng.normal(size=(1, dim))


@pytest.mark.parametrize("seed", range(8))
def test_reweighting_matches_explicit_projections(seed):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 7))
    jac = _conflicting_jacobian(rng, num_tasks, int(rng.integers(3, 20)))
    orders = np.stack([rng.permutation(num_tasks) for _ in range(num_tasks)])
    weights, count = weights_from_orders(jnp.asarray(jac @ jac.T, jnp.float32), jnp.asarray(orders))
    expected = _project_rows(jac, orders).sum(axis=0)
    direction = np.asarray(weights, np.float64) @ jac
    np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert int(count) >= 0


def test_update_uses_the_orders_drawn_from_its_key():
    rng = np.random.default_rng(3)
    jac = _conflicting_jacobian(rng, 5, 12)
    direction, weights, _ = aggregate(METHOD, jnp.asarray(jac), key=KEY)
    orders = np.asarray(task_orders(KEY, 5))
    assert all(sorted(row) == list(range(5)) for row in orders.tolist())
    np.testing.assert_allclose(direction, _project_rows(jac, orders).sum(axis=0), rtol=1e-4)
    # The same key gives the same weights; other keys draw other orders.
    _, again, _ = aggregate(METHOD, jnp.asarray(jac), key=KEY)
    np.testing.assert_array_equal(weights, again)
    others = [
        aggregate(METHOD, jnp.asarray(jac), key=jax.random.PRNGKey(k))[1] for k in range(1, 9)
    ]
    assert any(not np.allclose(weights, w) for w in others)


def test_no_conflict_gives_the_sum():
    rng = np.random.default_rng(0)
    jac = np.abs(rng.normal(size=(4, 10)))  # all inner products positive
    direction, weights, _ = aggregate(METHOD, jnp.asarray(jac, jnp.float32), key=KEY)
    np.testing.assert_allclose(weights, 1.0)
    np.testing.assert_allclose(direction, jac.sum(axis=0), rtol=1e-5)


def test_two_tasks_projected_rows_do_not_conflict():
    g1, g2 = np.array([1.0, 0.2, -0.3]), np.array([-0.8, 0.5, 0.1])
    jac = np.stack([g1, g2])
    _, weights, _ = aggregate(METHOD, jnp.asarray(jac, jnp.float32), key=KEY)
    w1, w2 = np.asarray(weights, np.float64)
    # With two tasks g_1' = g_1 + (w_2 − 1) g_2 and g_2' = g_2 + (w_1 − 1) g_1.
    p1, p2 = g1 + (w2 - 1) * g2, g2 + (w1 - 1) * g1
    assert abs(p1 @ g2) < 1e-6 and abs(p2 @ g1) < 1e-6
    assert p1 @ p2 >= 0
    np.testing.assert_allclose(p1, g1 - (g1 @ g2) / (g2 @ g2) * g2, rtol=1e-5)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_bank_finite_and_scale_free(case):
    jac = jacobian_bank()[case]
    _, weights, _ = aggregate(METHOD, jnp.asarray(jac), key=KEY)
    assert np.all(np.isfinite(weights))
    # PCGrad's coefficients only involve ratios of inner products.
    _, scaled, _ = aggregate(METHOD, jnp.asarray(jac * 1e3), key=KEY)
    np.testing.assert_allclose(weights, scaled, rtol=1e-4)


def test_zero_row_keeps_weight_one_and_metrics_jit():
    jac = jnp.asarray([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]])
    method = pcgrad()
    gram = jac @ jac.T
    state = method.init(("a", "b", "c"))
    weights, _, metrics = jax.jit(method.update)(None, state, key=KEY, gramian=gram)
    assert float(weights[2]) == 1.0
    assert int(metrics["num_projections"]) == 2  # each conflicting row projected once
