"""`imtl_l`: for fixed losses the scaled losses `e^s L` equalise at 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.weighting._imtl_l import imtl_l


def test_scaled_losses_equalise():
    losses = jnp.asarray([0.05, 1.0, 20.0])
    method = imtl_l(learning_rate=0.05)
    update = jax.jit(method.update)
    state = method.init(("a", "b", "c"))
    for _ in range(3000):
        weights, state, _ = update(losses, state, key=None)
    np.testing.assert_allclose(state.loss_scale, -np.log(losses), atol=1e-2)
    np.testing.assert_allclose(weights * losses, 1.0, atol=1e-2)


def test_initial_weights_and_metrics():
    method = imtl_l(init_scale=0.5)
    weights, state, metrics = method.update(jnp.ones(2), method.init(("a", "b")), key=None)
    np.testing.assert_allclose(weights, np.exp(0.5), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_scale"], 0.5)
    # e^{0.5}·1 − 1 > 0: s decreases.
    assert np.all(np.asarray(state.loss_scale) < 0.5)


def test_rejects_bad_learning_rate():
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        imtl_l(learning_rate=0.0)
