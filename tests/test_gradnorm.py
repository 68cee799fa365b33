"""`gradnorm`: weights sum to T and the weighted gradient norms move to their targets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.weighting._gradnorm import gradnorm


def test_weighted_norms_move_toward_targets():
    norms = jnp.asarray([0.1, 1.0, 10.0])
    gram = jnp.diag(norms**2)
    method = gradnorm(learning_rate=0.05)
    update = jax.jit(method.update)
    state = method.init(("a", "b", "c"))
    initial = jnp.asarray([2.0, 2.0, 2.0])
    weights, state, metrics = update(initial, state, key=None, gramian=gram)
    first = float(metrics["gradnorm_loss"])
    np.testing.assert_allclose(weights, 1.0, rtol=1e-6)
    # Task b has trained least (highest relative loss) and must end with the largest G_t.
    losses = jnp.asarray([1.0, 1.5, 1.0])
    for _ in range(400):
        weights, state, metrics = update(losses, state, key=None, gramian=gram)
    np.testing.assert_allclose(np.sum(weights), 3.0, rtol=1e-5)
    assert float(metrics["gradnorm_loss"]) < 0.2 * first + 1e-3
    weighted = np.asarray(weights * norms)
    ratio = np.asarray(losses / initial)
    target = weighted.mean() * (ratio / ratio.mean()) ** 1.5
    np.testing.assert_allclose(weighted, target, rtol=0.1)
    np.testing.assert_allclose(state.initial_losses, initial)


def test_finite_on_degenerate_gramians():
    method = gradnorm()
    for gram in (jnp.zeros((3, 3)), jnp.eye(3) * 1e20, jnp.eye(3) * 1e-20):
        state = method.init(("a", "b", "c"))
        for losses in (jnp.zeros(3), jnp.asarray([1e-10, 1.0, 1e10])):
            weights, state, _ = method.update(losses, state, key=None, gramian=gram)
            assert np.all(np.isfinite(weights)) and np.all(np.isfinite(state.logits))
