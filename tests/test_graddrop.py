"""`graddrop`: same-sign coordinates are kept, the mask is unbiased, the step key drives it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._graddrop import graddrop
from tests.banks import jacobian_bank


def _init(method, jac):
    names = weighting.default_task_names(jac.shape[0])
    return method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))


def test_same_sign_coordinates_are_kept_in_full():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(4, 60)).astype(np.float32)
    jac[:, :20] = np.abs(jac[:, :20])  # all positive
    jac[:, 20:40] = -np.abs(jac[:, 20:40])  # all negative
    jac[1, 10] = 0.0  # a zero entry does not break purity
    method = graddrop()
    state = _init(method, jac)
    update = jax.jit(method.update)
    for step in range(5):
        key = jax.random.PRNGKey(step)
        direction, state, _ = update(None, state, key=key, rows=jnp.asarray(jac))
        np.testing.assert_allclose(direction[:40], jac.sum(0)[:40], rtol=1e-6)
        # Mixed coordinates follow one sign: d_j is the sum of its positive or negative part.
        positive = np.where(jac[:, 40:] > 0, jac[:, 40:], 0).sum(0)
        negative = np.where(jac[:, 40:] < 0, jac[:, 40:], 0).sum(0)
        d = np.asarray(direction[40:])
        assert np.all(np.isclose(d, positive) | np.isclose(d, negative))


def test_mask_is_unbiased():
    """E[d_j] = P_j S⁺_j − (1 − P_j) S⁻_j = S⁺_j − S⁻_j = Σ_t g_tj with P_j = S⁺/(S⁺ + S⁻)."""
    rng = np.random.default_rng(1)
    jac = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    method = graddrop()
    draws = 4000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    state = _init(method, jac)
    directions, _, _ = jax.jit(jax.vmap(lambda k: method.update(None, state, key=k, rows=jac)))(
        keys
    )
    spread = np.sum(np.abs(np.asarray(jac)), axis=0)
    np.testing.assert_array_less(
        np.abs(np.mean(directions, axis=0) - np.sum(jac, axis=0)), 5 * spread / np.sqrt(draws)
    )


def test_leak_one_is_the_sum_and_metrics():
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    key = jax.random.PRNGKey(0)
    direction, _, state = jax.jit(lambda j: weighting.aggregate(graddrop(leak=1.0), j, key=key))(
        jac
    )
    np.testing.assert_allclose(direction, np.sum(jac, axis=0), rtol=1e-6)
    _, _, metrics = jax.jit(graddrop().update)(None, state, key=key, rows=jnp.abs(jac))
    np.testing.assert_allclose(metrics["kept_fraction"], 1.0)


def test_step_key_drives_the_mask():
    jac = jnp.asarray(np.random.default_rng(2).normal(size=(3, 200)), jnp.float32)
    method = graddrop()
    update = jax.jit(method.update)
    state = _init(method, jac)
    key, other_key = jax.random.PRNGKey(7), jax.random.PRNGKey(8)
    first, _, _ = update(None, state, key=key, rows=jac)
    again, _, _ = update(None, state, key=key, rows=jac)
    np.testing.assert_array_equal(first, again)
    other, _, _ = update(None, state, key=other_key, rows=jac)
    assert not np.array_equal(first, other)


def test_aggregate_needs_a_key():
    jac = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="key="):
        weighting.aggregate(graddrop(), jac)


@pytest.mark.parametrize("options", [{"leak": -0.1}, {"leak": 1.5}, {"leak": "0"}])
def test_rejects_bad_options(options):
    with pytest.raises(ValueError, match="graddrop: leak must be"):
        graddrop(**options)


def _direction(method, jac, key):
    return method.update(None, _init(method, jac), key=key, rows=jnp.asarray(jac))[0]


def test_per_task_leak():
    jac = jacobian_bank()["random4"].astype(np.float32)
    key = jax.random.PRNGKey(3)
    # The same leak for every task is the scalar leak, bit for bit.
    np.testing.assert_array_equal(
        _direction(graddrop(leak=(0.3,) * 4), jac, key), _direction(graddrop(leak=0.3), jac, key)
    )
    # All ones: every gradient passes unmasked, d = Σ_t g_t.
    np.testing.assert_allclose(
        _direction(graddrop(leak=[1.0] * 4), jac, key), jac.sum(0), rtol=1e-6, atol=1e-6
    )
    # ℓ = (1, 0, 0, 0): task 0 passes in full, the others are masked as with ℓ = 0, so
    # d − d(ℓ=0) = (1 − M_0) g_0 is 0 or g_0j in every coordinate.
    masked = np.asarray(_direction(graddrop(), jac, key))
    leaky = np.asarray(_direction(graddrop(leak=(1.0, 0.0, 0.0, 0.0)), jac, key))
    gap = leaky - masked
    assert np.all(np.isclose(gap, 0.0, atol=1e-6) | np.isclose(gap, jac[0], atol=1e-6))
    assert not np.allclose(gap, 0.0)


def test_per_task_leak_is_checked():
    jac = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="graddrop: leak has 2 entries but there are 3 tasks"):
        _init(graddrop(leak=(0.1, 0.2)), jac)
    for leak in [(0.1, 1.5), (), (0.1, True), ("a",)]:
        with pytest.raises(ValueError, match="graddrop: leak must be"):
            graddrop(leak=leak)
