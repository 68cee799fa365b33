"""`db_mtl`: rescaled EMA rows have equal norms; loss scales do not matter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._db_mtl import db_mtl
from tests.banks import bank_params, jacobian_bank


def _init(method, jac):
    names = weighting.default_task_names(jac.shape[0])
    return method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_rescaled_rows_have_equal_norms_and_are_finite(case):
    jac = jnp.asarray(jacobian_bank()[case])
    method = db_mtl()
    update = jax.jit(method.update)
    state = _init(method, jac)
    losses = jnp.linspace(0.5, 2.0, jac.shape[0])
    for step in range(3):
        direction, state, metrics = update(losses * (step + 1), state, key=None, rows=jac)
        assert np.all(np.isfinite(direction)), case
        norms = np.asarray(metrics["buffer_norm"], np.float64)
        rescaled = np.asarray(metrics["buffer_scale"], np.float64) * norms
        nonzero = norms > 0
        np.testing.assert_allclose(rescaled[nonzero], norms.max(), rtol=1e-5)
        assert np.all(metrics["buffer_scale"][~nonzero] == 0)


def test_first_update_matches_the_rule():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(3, 12)).astype(np.float32) * np.array([[1.0], [10.0], [0.1]], np.float32)
    losses = np.array([0.3, 2.0, 5.0], np.float32)
    direction, weights, _ = weighting.aggregate(db_mtl(), jnp.asarray(jac), losses=losses)
    assert weights is None
    buffer = 0.1 * jac / (losses[:, None] + 1e-8)  # (1 − β) ĝ from a zero buffer
    norms = np.linalg.norm(buffer, axis=1)
    expected = ((norms.max() / norms)[:, None] * buffer).sum(0)
    np.testing.assert_allclose(direction, expected, rtol=1e-5)


def test_loss_scale_invariance():
    """Multiplying L_t (and so g_t) by c_t leaves the log-loss gradients unchanged."""
    rng = np.random.default_rng(1)
    jac = jnp.asarray(rng.normal(size=(3, 10)), jnp.float32)
    losses = jnp.asarray([0.5, 1.0, 2.0])
    c = jnp.asarray([1e-3, 1.0, 1e4])
    method = db_mtl(eps=0.0)
    update = jax.jit(method.update)
    state_a = state_b = _init(method, jac)
    for _ in range(3):
        d_a, state_a, _ = update(losses, state_a, key=None, rows=jac)
        d_b, state_b, _ = update(c * losses, state_b, key=None, rows=c[:, None] * jac)
    np.testing.assert_allclose(d_a, d_b, rtol=1e-5)


def test_buffer_converges_to_the_log_loss_gradient_on_a_fixed_batch():
    rng = np.random.default_rng(2)
    jac = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
    losses = jnp.asarray([0.5, 4.0])
    method = db_mtl()
    update = jax.jit(method.update)
    state = _init(method, jac)
    for _ in range(200):  # 0.9^200 ≈ 7e-10
        _, state, _ = update(losses, state, key=None, rows=jac)
    np.testing.assert_allclose(state.buffer, jac / (losses[:, None] + 1e-8), rtol=1e-5)
    assert int(state.step) == 200


def test_needs_losses_and_rejects_bad_options():
    with pytest.raises(ValueError, match="db_mtl: needs the task losses"):
        weighting.aggregate(db_mtl(), jnp.ones((2, 3)))
    for options in ({"beta": 1.5}, {"beta": -0.1}, {"beta_sigma": -1.0}, {"eps": float("nan")}):
        with pytest.raises(ValueError, match="db_mtl: .* must be a"):
            db_mtl(**options)
