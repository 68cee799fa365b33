"""`famo`: weights from the logits, logits from the loss decrease."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import weighting
from mtl_jax.weighting._famo import famo, logit_gradient


def test_weights_are_the_gradient_of_the_weighted_log_objective():
    method = famo()
    state = method.init(("a", "b", "c"))
    state = state._replace(logits=jnp.asarray([0.3, -0.2, 0.1]))
    losses = jnp.asarray([0.5, 2.0, 4.0])
    weights, _, _ = method.update(losses, state, key=None)
    z = jax.nn.softmax(state.logits)
    c = jnp.sum(z / losses)
    # d/dL of Σ z_t log L_t / c (c constant) is z / (c L).
    expected = jax.grad(lambda loss: jnp.sum(z * jnp.log(loss)) / c)(losses)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-6)


def test_equal_decrease_rates_give_no_logit_gradient():
    logits = jnp.asarray([0.4, -1.0, 0.2])
    np.testing.assert_allclose(logit_gradient(logits, jnp.full(3, 0.1)), 0.0, atol=1e-8)
    # Unequal rates: the faster task's logit gets the positive gradient (Adam lowers it).
    grad = logit_gradient(logits, jnp.asarray([0.5, 0.1, 0.1]))
    assert grad[0] > 0 and grad[1] < 0 and grad[2] < 0
    method = famo(weight_decay=0.0)
    state = method.init(("a", "b", "c"))._replace(logits=logits)
    state, _ = method.after_update(jnp.ones(3), jnp.exp(-jnp.asarray([0.5, 0.1, 0.1])), state)
    assert state.logits[0] < logits[0]


def test_slowly_improving_task_gains_weight():
    method = famo()
    state = method.init(("fast", "slow"))
    before = jnp.asarray([1.0, 1.0])
    for _ in range(20):
        state, _ = method.after_update(before, jnp.asarray([0.5, 0.99]), state)
    weights, _, _ = method.update(before, state, key=None)
    assert weights[1] > weights[0]


def test_finite_on_extreme_losses():
    method = famo()
    state = method.init(("a", "b", "c"))
    for losses in ([0.0, 1.0, 2.0], [1e-10, 1.0, 1e10], [-1.0, 0.0, 1.0]):
        losses = jnp.asarray(losses)
        weights, state, _ = method.update(losses, state, key=None)
        state, _ = method.after_update(losses, losses * 0.5, state)
        assert np.all(np.isfinite(weights)) and np.all(np.isfinite(state.logits))


def test_registered_with_hook():
    method = weighting.create("famo")
    assert method.after_update is not None and method.kind == weighting.LOSS
