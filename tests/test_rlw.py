"""`rlw`: random weights on the simplex, drawn from the step key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import weighting


def _draws(method, num_tasks, keys):
    update = jax.jit(method.update)
    state = method.init(weighting.default_task_names(num_tasks))
    out = []
    for key in keys:
        weights, state, _ = update(jnp.ones(num_tasks), state, key=key)
        out.append(np.asarray(weights))
    return np.stack(out)


def _step_keys(seed, steps):
    base = jax.random.PRNGKey(seed)
    return [jax.random.fold_in(base, step) for step in range(steps)]


def test_on_the_simplex_and_fresh_every_step():
    draws = _draws(weighting.rlw(), 5, _step_keys(0, 20))
    assert np.all(draws > 0)
    np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-5)
    assert len({tuple(row) for row in draws}) == 20, "a draw repeated"


def test_same_key_same_weights_other_key_other_weights():
    first = _draws(weighting.rlw(), 4, _step_keys(3, 5))
    again = _draws(weighting.rlw(), 4, _step_keys(3, 5))
    other = _draws(weighting.rlw(), 4, _step_keys(4, 5))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_weights_are_softmax_of_standard_normal():
    """Each weight is exchangeable (mean 1/T), and log-ratios are N(0, 2)."""
    method = weighting.rlw()
    state = method.init(("a", "b", "c"))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    weights, _, _ = jax.vmap(lambda k: method.update(jnp.ones(3), state, key=k))(keys)
    np.testing.assert_allclose(np.mean(np.asarray(weights), axis=0), 1 / 3, atol=0.02)
    log_ratio = np.log(np.asarray(weights[:, 0])) - np.log(np.asarray(weights[:, 1]))
    np.testing.assert_allclose(np.var(log_ratio), 2.0, rtol=0.1)


def test_declares_its_randomness():
    assert weighting.rlw().stochastic
    assert not weighting.equal().stochastic
