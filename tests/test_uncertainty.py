"""`uncertainty`: for fixed losses the log-variances converge to log L."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import weighting


def test_log_variance_converges_to_log_loss():
    losses = jnp.asarray([0.05, 1.0, 20.0])
    method = weighting.uncertainty(learning_rate=0.05)
    update = jax.jit(method.update)
    state = method.init(("a", "b", "c"))
    for _ in range(3000):
        weights, state, _ = update(losses, state, key=None)
    np.testing.assert_allclose(state.log_variance, np.log(losses), atol=1e-2)
    # At the optimum the weighted losses e^{-s} L / 2 all equal 1/2.
    np.testing.assert_allclose(weights * losses, 0.5, atol=1e-2)


def test_initial_weights_are_libmtl_defaults():
    method = weighting.uncertainty()
    weights, _, metrics = method.update(jnp.ones(2), method.init(("a", "b")), key=None)
    np.testing.assert_allclose(weights, 0.5 * np.exp(0.5), rtol=1e-6)
    np.testing.assert_allclose(metrics["log_variance"], -0.5)
